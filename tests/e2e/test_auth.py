"""Authentication with keys from the config file (`[auth]`, `[[auth.keys]]`):

- requests signed (SigV4) by boto3 and the AWS CLI with a configured key succeed;
- unsigned, wrongly signed, unknown-key and expired requests fail with AWS's error
  types, before any work is done;
- a key's policy (`allow` actions, `resources` streams) denies with
  AccessDeniedException, and nothing is done;
- the producer SDK's flow (host signed without the port, PutMedia signed over the
  headers only) works signed;
- the REST API and the console take the same keys as HTTP Basic or a bearer token.
"""
import base64
import datetime
import json
import os
import subprocess
import time
from unittest import mock

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, TARGET_PREFIX, aws_cli_cmd, unique_name

pytestmark = pytest.mark.freshet_only

ADMIN = ("AKIAFRESHETADMIN0001", "admin-secret-0123456789")
LIMITED = ("AKIAFRESHETLIMITED01", "limited-secret-9876543210")
# The producer SDK flow test signs with conftest's credentials.
SDK = ("test", "test")

CONFIG = f"""
[auth]
mode = "sigv4"

[[auth.keys]]
access_key_id = "{ADMIN[0]}"
secret_access_key = "{ADMIN[1]}"

[[auth.keys]]
access_key_id = "{LIMITED[0]}"
secret_access_key = "{LIMITED[1]}"
allow = ["kinesis:PutRecord*", "kinesis:Describe*", "kinesisvideo:*"]
resources = ["orders*", "cam-*"]

[[auth.keys]]
access_key_id = "{SDK[0]}"
secret_access_key = "{SDK[1]}"
"""


@pytest.fixture
def server(start_server, tmp_path):
    cfg = tmp_path / "freshet.toml"
    cfg.write_text(CONFIG)
    return start_server(extra_args=["--config", str(cfg)])


def client(endpoint, service, key):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client(service, endpoint_url=endpoint, region_name=REGION,
                                          aws_access_key_id=key[0], aws_secret_access_key=key[1],
                                          config=cfg)


def error_of(fn, **kw) -> ClientError:
    with pytest.raises(ClientError) as e:
        fn(**kw)
    return e.value


def code_status(err: ClientError):
    return err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"]


def make_stream(k, name):
    k.create_stream(StreamName=name, ShardCount=1)
    deadline = time.monotonic() + 20
    while k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_signed_requests_from_boto3_and_the_cli_succeed(server):
    ep = server.endpoint
    k = client(ep, "kinesis", ADMIN)
    name = unique_name("signed")
    make_stream(k, name)
    seq = k.put_record(StreamName=name, Data=b"signed", PartitionKey="p")["SequenceNumber"]
    it = k.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert [r["SequenceNumber"] for r in k.get_records(ShardIterator=it)["Records"]] == [seq]
    kv = client(ep, "kinesisvideo", ADMIN)
    cam = unique_name("cam-signed")
    kv.create_stream(StreamName=cam, DataRetentionInHours=1)
    assert kv.describe_stream(StreamName=cam)["StreamInfo"]["StreamName"] == cam
    data_ep = kv.get_data_endpoint(StreamName=cam, APIName="LIST_FRAGMENTS")["DataEndpoint"]
    assert client(data_ep, "kinesis-video-archived-media", ADMIN).list_fragments(
        StreamName=cam)["Fragments"] == []
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ADMIN[0], "AWS_SECRET_ACCESS_KEY": ADMIN[1],
           "AWS_MAX_ATTEMPTS": "1", "AWS_DEFAULT_REGION": REGION}
    env.pop("AWS_SESSION_TOKEN", None)
    p = subprocess.run([*aws_cli_cmd(), "--endpoint-url", ep, "--output", "json", "kinesis", "list-streams"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert name in json.loads(p.stdout)["StreamNames"]
    # The CLI with a wrong secret is refused with AWS's error.
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    p = subprocess.run([*aws_cli_cmd(), "--endpoint-url", ep, "kinesis", "list-streams"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0 and "InvalidSignatureException" in p.stderr, p.stderr
    health = requests.get(ep + "/health", timeout=5).json()
    assert health["authentication"] == "sigv4" and health["keys"] == 3
    assert ADMIN[1] not in json.dumps(health) and ADMIN[1] not in server.log_text()


def test_bad_signatures_get_aws_errors_before_any_work(server):
    ep = server.endpoint
    name = unique_name("guarded")
    # Unsigned.
    r = requests.post(ep + "/", data=json.dumps({"StreamName": name, "ShardCount": 1}), timeout=10,
                      headers={"Content-Type": "application/x-amz-json-1.1",
                               "X-Amz-Target": TARGET_PREFIX + "CreateStream"})
    assert (r.status_code, r.json()["__type"]) == (400, "MissingAuthenticationTokenException")
    assert r.json()["message"] == "Missing Authentication Token"
    # A CBOR request (the Java SDK, KCL, KPL) is answered in CBOR.
    import cbor2
    r = requests.post(ep + "/", data=cbor2.dumps({"StreamName": name, "ShardCount": 1}), timeout=10,
                      headers={"Content-Type": "application/x-amz-cbor-1.1",
                               "X-Amz-Target": TARGET_PREFIX + "CreateStream"})
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/x-amz-cbor-1.1"
    assert cbor2.loads(r.content)["__type"] == "MissingAuthenticationTokenException"
    r = requests.post(ep + "/createStream", json={"StreamName": name}, timeout=10)
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (403, "MissingAuthenticationTokenException")
    # A wrong secret, an unknown key.
    assert code_status(error_of(client(ep, "kinesis", (ADMIN[0], "nope")).create_stream,
                                StreamName=name, ShardCount=1)) == ("InvalidSignatureException", 400)
    assert code_status(error_of(client(ep, "kinesis", ("AKIAUNKNOWN000000000", "x")).create_stream,
                                StreamName=name, ShardCount=1)) == ("UnrecognizedClientException", 400)
    assert code_status(error_of(client(ep, "kinesisvideo", (ADMIN[0], "nope")).create_stream,
                                StreamName=name)) == ("InvalidSignatureException", 403)
    # Signed 20 minutes ago: outside the 15-minute window.
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        err = error_of(client(ep, "kinesis", ADMIN).create_stream, StreamName=name, ShardCount=1)
    assert code_status(err) == ("InvalidSignatureException", 400)
    assert err.response["Error"]["Message"].startswith("Signature expired:"), err.response["Error"]
    # Nothing was created by any of these.
    names = client(ep, "kinesis", ADMIN).list_streams()["StreamNames"]
    assert name not in names
    r = requests.post(ep + "/describeStream", json={"StreamName": name}, timeout=10,
                      auth=(ADMIN[0], ADMIN[1]))
    assert r.status_code == 404


def test_policies_deny_before_any_work(server):
    ep = server.endpoint
    admin = client(ep, "kinesis", ADMIN)
    limited = client(ep, "kinesis", LIMITED)
    orders, payments = unique_name("orders"), unique_name("payments")
    make_stream(admin, orders)
    make_stream(admin, payments)
    limited.put_record(StreamName=orders, Data=b"ok", PartitionKey="p")
    assert limited.describe_stream_summary(StreamName=orders)["StreamDescriptionSummary"]["StreamName"] == orders
    err = error_of(limited.put_record, StreamName=payments, Data=b"no", PartitionKey="p")
    assert code_status(err) == ("AccessDeniedException", 400)
    assert err.response["Error"]["Message"] == (
        f"User: arn:aws:iam::000000000000:user/{LIMITED[0]} is not authorized to perform: "
        f"kinesis:PutRecord on resource: arn:aws:kinesis:us-east-1:000000000000:stream/{payments}")
    err = error_of(limited.delete_stream, StreamName=orders)
    assert code_status(err) == ("AccessDeniedException", 400)
    assert admin.describe_stream_summary(StreamName=orders)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    # Nothing went into payments.
    it = admin.get_shard_iterator(StreamName=payments, ShardId="shardId-000000000000",
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert admin.get_records(ShardIterator=it)["Records"] == []
    # Video: any action, on cam-* streams only.
    kv = client(ep, "kinesisvideo", LIMITED)
    kv.create_stream(StreamName=unique_name("cam-ok"))
    err = error_of(kv.create_stream, StreamName=unique_name("lobby"))
    assert code_status(err) == ("AccessDeniedException", 401)


def test_the_producer_sdk_flow_works_signed(server, tmp_path):
    from test_producer_sdk import check_stored, sdk_session
    name = unique_name("cam-sdk")
    data_endpoint, acks, _ = sdk_session(server.endpoint, name)
    assert data_endpoint == server.endpoint
    check_stored(server.endpoint, name, acks, tmp_path)
    # The same flow with a key the server does not know is refused at DescribeStream.
    from test_producer_sdk import control_call
    status, kind, _ = control_call(server.endpoint, "describeStream", '{"StreamName": "x"}',
                                   credentials=("AKIAUNKNOWN000000000", "x"))
    assert (status, kind) == (403, "UnrecognizedClientException")


def test_rest_api_and_console_take_basic_credentials(server):
    ep = server.endpoint
    name = unique_name("rest")
    make_stream(client(ep, "kinesis", ADMIN), name)
    url = f"{ep}/v1/streams/{name}/records?start=TRIM_HORIZON&limit=1"
    r = requests.get(url, timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert r.json()["error"] == "MissingAuthenticationTokenException"
    assert requests.get(url, auth=ADMIN, timeout=10).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {ADMIN[0]}:{ADMIN[1]}"},
                        timeout=10).status_code == 200
    assert requests.get(url, auth=(ADMIN[0], "wrong"), timeout=10).status_code == 401
    # The limited key may not read `rest` (not an orders*/cam-* stream).
    assert requests.get(url, auth=LIMITED, timeout=10).status_code == 403
    # The console asks the browser for credentials, and its API calls carry them.
    r = requests.get(ep + "/console", timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(ep + "/console", auth=ADMIN, timeout=10).status_code == 200
    basic = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    r = requests.post(ep + "/listStreams", json={}, headers={"Authorization": basic}, timeout=10)
    assert r.status_code == 200, r.text
    # Playback URLs stay capability URLs; /health stays open.
    assert requests.get(ep + "/health", timeout=5).status_code == 200


def presigned_get(url, key, expires=300):
    """A GET URL presigned by botocore (query-string SigV4), as one shares a link."""
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="GET", url=url)
    SigV4QueryAuth(Credentials(*key), "kinesis", REGION, expires=expires).add_auth(req)
    return req.prepare().url


def test_presigned_urls(server):
    """A presigned URL to read a stream's records over the REST API: works as is, and
    not tampered with, expired, for an unknown key or beyond the key's policy."""
    ep = server.endpoint
    k = client(ep, "kinesis", ADMIN)
    name = unique_name("orders-presigned")
    make_stream(k, name)
    k.put_record(StreamName=name, Data=b"shared", PartitionKey="p")
    url = f"{ep}/v1/streams/{name}/records?start=TRIM_HORIZON"
    assert requests.get(url, timeout=10).status_code == 401
    link = presigned_get(url, ADMIN)
    assert "X-Amz-Signature=" in link
    r = requests.get(link, timeout=10)
    assert r.status_code == 200, r.text
    assert "shared" in r.text or base64.b64encode(b"shared").decode() in r.text, r.text
    # Another stream with the same signature: the path is signed.
    r = requests.get(link.replace(name, name + "x"), timeout=10)
    assert (r.status_code, r.json()["error"]) == (401, "InvalidSignatureException"), r.text
    sig = link.split("X-Amz-Signature=")[1][:64]
    r = requests.get(link.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:]), timeout=10)
    assert (r.status_code, r.json()["error"]) == (401, "InvalidSignatureException"), r.text
    r = requests.get(presigned_get(url, ("AKIAUNKNOWN000000000", "x")), timeout=10)
    assert (r.status_code, r.json()["error"]) == (401, "UnrecognizedClientException"), r.text
    # Presigned 10 minutes ago for 5 minutes: expired.
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        old = presigned_get(url, ADMIN, expires=300)
    r = requests.get(old, timeout=10)
    assert r.status_code in (401, 403), r.text
    assert "expired" in r.json()["message"].lower(), r.text
    # The limited key may not read records (its policy allows PutRecord* and Describe*).
    r = requests.get(presigned_get(url, LIMITED), timeout=10)
    assert (r.status_code, r.json()["error"]) == (403, "AccessDeniedException"), r.text


def send(pre):
    """Send a botocore-prepared request as it is."""
    return requests.request(pre.method, pre.url, data=pre.body, headers=dict(pre.headers.items()),
                            timeout=10)


def test_a_signed_request_replayed_within_the_window_is_accepted_and_outside_refused(server):
    """SigV4 has no nonce: AWS accepts a replay inside the 15-minute window (that is
    what TLS is for) and refuses it once the signature is older than that."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    ep = server.endpoint

    def signed(at):
        req = AWSRequest(method="POST", url=ep + "/", data="{}",
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": TARGET_PREFIX + "ListStreams"})
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            SigV4Auth(Credentials(*ADMIN), "kinesis", REGION).add_auth(req)
        return req.prepare()

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    fresh = signed(now - datetime.timedelta(minutes=14))
    for _ in range(2):
        r = send(fresh)
        assert r.status_code == 200, r.text
    stale = signed(now - datetime.timedelta(minutes=16))
    r = send(stale)
    assert (r.status_code, r.json()["__type"]) == (400, "InvalidSignatureException"), r.text
    assert r.json()["message"].startswith("Signature expired:")
    future = signed(now + datetime.timedelta(minutes=16))
    r = send(future)
    assert (r.status_code, r.json()["__type"]) == (400, "InvalidSignatureException"), r.text
