"""RTSP with keys configured (`--auth-keys-file`):

- publishers (ffmpeg over TCP, GStreamer's rtspclientsink) authenticate with Digest,
  user = access key id, password = secret; fragments appear (ListFragments, signed);
- no, wrong or unknown credentials get 401 and create nothing; a key's policy decides
  who may publish (`kinesisvideo:PutMedia`) and create (`kinesisvideo:CreateStream`)
  which streams, else 403 and nothing is created;
- on the plain listener Basic is refused and only Digest offered; forged nonces are
  refused; repeated failures close the connection; a session SETUPs only media it
  announced, of at most 8;
- pulling from a camera that wants Digest or Basic works, and its password shows
  nowhere: not in the server log, the feeds API or /health.
"""
import base64
import hashlib
import json
import re
import signal
import socket
import subprocess

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, FreshetServer, can_start_dedicated, free_port, unique_name, wait_for
from test_video_ingest import VIDEO, Camera, gst_rtsp

pytestmark = pytest.mark.freshet_only

ADMIN = ("AKIARTSPADMIN0000001", "rtsp-admin-secret-0123")
# May publish to cam-* streams, not create them.
CAMS = ("AKIARTSPCAMS00000001", "rtsp-cams-secret-4567")
# May do everything with other-* streams, nothing with cam-*.
OTHER = ("AKIARTSPOTHER0000001", "rtsp-other-secret-89ab")

KEYS = f"""
[[auth.keys]]
access_key_id = "{ADMIN[0]}"
secret_access_key = "{ADMIN[1]}"

[[auth.keys]]
access_key_id = "{CAMS[0]}"
secret_access_key = "{CAMS[1]}"
allow = ["kinesisvideo:PutMedia"]
resources = ["cam-*"]

[[auth.keys]]
access_key_id = "{OTHER[0]}"
secret_access_key = "{OTHER[1]}"
allow = ["kinesisvideo:*"]
resources = ["other-*"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ok, why = can_start_dedicated()
    if not ok:
        pytest.skip(why)
    keys = tmp_path_factory.mktemp("rtsp-auth") / "keys.toml"
    keys.write_text(KEYS)
    rtsp_port = free_port()
    s = FreshetServer(state_delay_ms=0, extra_args=[
        "--auth-keys-file", str(keys), "--rtsp-listen", f"127.0.0.1:{rtsp_port}"]).start()
    s.rtsp_port = rtsp_port
    s.rtsp = f"rtsp://127.0.0.1:{rtsp_port}"
    yield s
    s.cleanup()


def aws(endpoint, service, key=ADMIN):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client(service, endpoint_url=endpoint, region_name=REGION,
                                          aws_access_key_id=key[0], aws_secret_access_key=key[1],
                                          config=cfg)


def fragments(server, stream) -> list:
    kv = aws(server.endpoint, "kinesisvideo")
    data_ep = kv.get_data_endpoint(StreamName=stream, APIName="LIST_FRAGMENTS")["DataEndpoint"]
    return aws(data_ep, "kinesis-video-archived-media").list_fragments(StreamName=stream)["Fragments"]


def stream_exists(server, stream) -> bool:
    try:
        aws(server.endpoint, "kinesisvideo").describe_stream(StreamName=stream)
        return True
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ResourceNotFoundException", e.response
        return False


def with_userinfo(server, stream, key=None) -> str:
    auth = f"{key[0]}:{key[1]}@" if key else ""
    return f"rtsp://{auth}127.0.0.1:{server.rtsp_port}/{stream}"


def ffmpeg_publish(url, seconds=4):
    """ffmpeg pushing H.264 (TCP interleaved); returns (exit code, stderr)."""
    cmd = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi",
           "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
           *VIDEO["h264"], "-f", "rtsp", "-rtsp_transport", "tcp", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def test_ffmpeg_publishes_with_digest(server):
    stream = unique_name("pub-ffmpeg")
    code, err = ffmpeg_publish(with_userinfo(server, stream, ADMIN))
    assert code == 0, err
    frags = wait_for(lambda: fragments(server, stream), 20, "fragments of the published stream")
    assert len(frags) >= 1
    log = server.log_text()
    assert ADMIN[1] not in log


@pytest.mark.parametrize("key", [None, (ADMIN[0], "not-the-secret"), ("AKIANOSUCHKEY0000001", ADMIN[1])],
                         ids=["no-credentials", "wrong-secret", "unknown-key"])
def test_ffmpeg_without_valid_credentials_gets_401(server, key):
    stream = unique_name("pub-refused")
    code, err = ffmpeg_publish(with_userinfo(server, stream, key), seconds=1)
    assert code != 0
    assert "401" in err, err
    assert not stream_exists(server, stream)
    if key:
        assert key[1] not in server.log_text()


def test_key_policies_decide_who_publishes_and_creates(server):
    kv = aws(server.endpoint, "kinesisvideo")
    existing = unique_name("cam-1")
    kv.create_stream(StreamName=existing, DataRetentionInHours=1)
    # PutMedia on cam-*: publishing to an existing cam stream works.
    code, err = ffmpeg_publish(with_userinfo(server, existing, CAMS))
    assert code == 0, err
    assert wait_for(lambda: fragments(server, existing), 20, "fragments from the cams key")
    # Without CreateStream a new cam stream is refused and nothing is created.
    new = unique_name("cam-2")
    code, err = ffmpeg_publish(with_userinfo(server, new, CAMS), seconds=1)
    assert code != 0 and "403" in err, err
    assert not stream_exists(server, new)
    # A key without PutMedia on the stream may not publish to it.
    before = len(fragments(server, existing))
    code, err = ffmpeg_publish(with_userinfo(server, existing, OTHER), seconds=1)
    assert code != 0 and "403" in err, err
    assert len(fragments(server, existing)) == before
    # ...while it may create and publish where its policy says.
    mine = unique_name("other-cam")
    code, err = ffmpeg_publish(with_userinfo(server, mine, OTHER))
    assert code == 0, err
    assert wait_for(lambda: fragments(server, mine), 20, "fragments from the other key")


def run_gstreamer(cmd):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # rtspclientsink at times never posts EOS on a loaded machine: interrupt it as
        # Ctrl-C would (gst-launch -e then sends EOS, the sink TEARDOWN).
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
    return proc.returncode, out + err


def test_gstreamer_publishes_with_digest(server):
    stream = unique_name("pub-gst")
    cmd = gst_rtsp(f"{server.rtsp}/{stream}", "tcp", frames=100)
    code, out = run_gstreamer([*cmd, f"user-id={ADMIN[0]}", f"user-pw={ADMIN[1]}"])
    assert code in (0, -9), out
    assert wait_for(lambda: fragments(server, stream), 20, "fragments from rtspclientsink")
    # And without the password: refused, nothing created.
    refused = unique_name("pub-gst-refused")
    code, out = run_gstreamer([*gst_rtsp(f"{server.rtsp}/{refused}", "tcp", frames=25),
                               f"user-id={ADMIN[0]}", "user-pw=wrong"])
    assert code != 0, out
    assert not stream_exists(server, refused)


# ---------------------------------------------------------------------------
# The protocol over a raw socket, with a Digest client written here (RFC 2617)
# ---------------------------------------------------------------------------

SDP_VIDEO = ("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
             "a=fmtp:96 packetization-mode=1\r\na=control:streamid={i}\r\n")


def sdp(media=1) -> bytes:
    head = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    return (head + "".join(SDP_VIDEO.format(i=i) for i in range(media))).encode()


class Rtsp:
    """One RTSP connection, request by request."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.cseq = 0

    def close(self):
        self.sock.close()

    def send(self, method, uri, headers=None, body=b""):
        """Returns (status, headers as a list of (name, value)), or None once closed."""
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines += ["Content-Type: application/sdp", f"Content-Length: {len(body)}"]
        try:
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            return None
        head = data.split(b"\r\n\r\n")[0].decode()
        status = int(head.split(" ")[1])
        hdrs = [tuple(p.strip() for p in line.split(":", 1)) for line in head.split("\r\n")[1:]]
        return status, hdrs


def challenges(hdrs) -> list[str]:
    return [v for k, v in hdrs if k.lower() == "www-authenticate"]


def digest(key, method, uri, challenge, qop=True, nonce=None) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[1]))
    nonce = nonce or params["nonce"]
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{key[0]}:{params['realm']}:{key[1]}"), md5(f"{method}:{uri}")
    base = (f'Digest username="{key[0]}", realm="{params["realm"]}", nonce="{nonce}", '
            f'uri="{uri}", algorithm=MD5')
    if qop:
        answer = md5(f"{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}")
        return base + f', qop=auth, nc=00000001, cnonce="0a4f113b", response="{answer}"'
    return base + f', response="{md5(f"{ha1}:{nonce}:{ha2}")}"'


def test_raw_digest_basic_and_nonces(server):
    stream = unique_name("raw")
    uri = f"{server.rtsp}/{stream}"
    c = Rtsp(server.rtsp_port)
    try:
        status, _ = c.send("OPTIONS", uri)
        assert status == 200  # OPTIONS needs no credentials
        status, hdrs = c.send("ANNOUNCE", uri, body=sdp())
        assert status == 401
        [challenge] = challenges(hdrs)  # only Digest on a plain connection
        assert challenge.startswith('Digest realm="Freshet", nonce="')
        assert 'algorithm=MD5' in challenge and 'qop="auth"' in challenge
        # Basic with the right secret is refused on a plain connection.
        token = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        status, hdrs = c.send("ANNOUNCE", uri, {"Authorization": f"Basic {token}"}, sdp())
        assert status == 401 and [h.split()[0] for h in challenges(hdrs)] == ["Digest"]
        # A forged nonce, and a real one with its timestamp moved back, are refused.
        forged = "0" * 16 + "f" * 32
        status, _ = c.send("ANNOUNCE", uri, {"Authorization": digest(ADMIN, "ANNOUNCE", uri, challenge,
                                                                      nonce=forged)}, sdp())
        assert status == 401
        real = re.search(r'nonce="([^"]+)"', challenge).group(1)
        older = f"{int(real[:16], 16) - 600:016x}" + real[16:]
        status, _ = c.send("ANNOUNCE", uri, {"Authorization": digest(ADMIN, "ANNOUNCE", uri, challenge,
                                                                      nonce=older)}, sdp())
        assert status == 401
        assert not stream_exists(server, stream)
        # The right answer, without qop (as GStreamer sends it), is accepted.
        status, _ = c.send("ANNOUNCE", uri, {"Authorization": digest(ADMIN, "ANNOUNCE", uri, challenge,
                                                                      qop=False)}, sdp())
        assert status == 200
        assert stream_exists(server, stream)
        # Every later request needs it too.
        setup_uri = f"{uri}/streamid=0"
        transport = {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"}
        status, _ = c.send("SETUP", setup_uri, transport)
        assert status == 401
        status, _ = c.send("SETUP", setup_uri, {**transport, "Authorization": digest(
            ADMIN, "SETUP", setup_uri, challenge)})
        assert status == 200
    finally:
        c.close()
    assert ADMIN[1] not in server.log_text()


def test_failed_attempts_close_the_connection(server):
    uri = f"{server.rtsp}/{unique_name('brute')}"
    c = Rtsp(server.rtsp_port)
    try:
        _, hdrs = c.send("ANNOUNCE", uri, body=sdp())
        [challenge] = challenges(hdrs)
        answers = [c.send("ANNOUNCE", uri, {"Authorization": digest((ADMIN[0], f"guess-{i}"), "ANNOUNCE",
                                                                    uri, challenge)}, sdp())
                   for i in range(7)]
        assert [a[0] for a in answers[:5]] == [401] * 5, answers
        assert answers[5:] == [None, None]  # closed after the fifth
    finally:
        c.close()
    log = server.log_text()
    assert "RTSP authentication failed" in log and "guess-" not in log


def test_setups_are_limited_to_announced_media(server):
    stream = unique_name("caps")
    uri = f"{server.rtsp}/{stream}"
    c = Rtsp(server.rtsp_port)
    try:
        _, hdrs = c.send("ANNOUNCE", uri, body=sdp(9))
        [challenge] = challenges(hdrs)
        auth = lambda m, u: {"Authorization": digest(ADMIN, m, u, challenge)}  # noqa: E731
        status, _ = c.send("ANNOUNCE", uri, auth("ANNOUNCE", uri), sdp(9))
        assert status == 400  # more than 8 media
        assert not stream_exists(server, stream)
        # Two video media announced: the session stores the first only.
        status, _ = c.send("ANNOUNCE", uri, auth("ANNOUNCE", uri), sdp(2))
        assert status == 200
        transport = {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"}
        for media, want in [("streamid=0", 200), ("streamid=1", 404), ("streamid=7", 404)]:
            u = f"{uri}/{media}"
            status, _ = c.send("SETUP", u, {**transport, **auth("SETUP", u)})
            assert status == want, media
    finally:
        c.close()


# ---------------------------------------------------------------------------
# Pulling from a camera that wants credentials
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["digest", "basic"])
def test_pull_from_a_camera_with_credentials_hides_the_password(server, method):
    stream = unique_name(f"pull-{method}")
    port = free_port()
    password = f"cam-pw-{method}-7f3a"
    camera = Camera(port, "viewer", password, method).start()
    feeds = f"{server.endpoint}/v1/video/feeds"
    basic = (ADMIN[0], ADMIN[1])
    try:
        r = requests.put(f"{feeds}/{stream}", auth=basic, timeout=10,
                         json={"RtspUrl": f"rtsp://viewer:{password}@127.0.0.1:{port}/live"})
        assert r.status_code == 200, r.text
        assert password not in r.text
        status = lambda: requests.get(f"{feeds}/{stream}", auth=basic, timeout=10).json()  # noqa: E731
        wait_for(lambda: status()["Status"]["FragmentsStored"] >= 2, 40, "fragments from the camera")
        shown = status()
        assert shown["Source"]["Url"] == f"rtsp://viewer:***@127.0.0.1:{port}/live"
        listed = requests.get(feeds, auth=basic, timeout=10).text
        assert password not in json.dumps(shown) and password not in listed
        assert password not in requests.get(f"{server.endpoint}/health", timeout=5).text
        assert len(fragments(server, stream)) >= 1
    finally:
        camera.stop()
        requests.delete(f"{feeds}/{stream}", auth=basic, timeout=10)
    log = server.log_text()
    assert f"rtsp://viewer:***@127.0.0.1:{port}/live" in log
    assert password not in log


def test_basic_is_offered_and_accepted_over_rtsps(tmp_path):
    """On RTSPS the secret travels encrypted, so Basic is offered beside Digest and
    accepted; a wrong secret is still refused."""
    import ssl
    from test_tls import Pki
    pki = Pki(tmp_path)
    cert, key = pki.issue("rtsps-auth")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "keys.toml").write_text(KEYS)
    rtsps_port = free_port()
    s = FreshetServer(state_delay_ms=0, tls_ca=str(pki.ca), extra_args=[
        "--auth-keys-file", str(tmp_path / "keys.toml"), "--tls-cert", str(tmp_path / "cert.pem"),
        "--tls-key", str(tmp_path / "key.pem"), "--rtsps-listen", f"127.0.0.1:{rtsps_port}"]).start()
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        c = Rtsp.__new__(Rtsp)
        c.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", rtsps_port), timeout=10),
                                 server_hostname="localhost")
        c.cseq = 0
        stream = unique_name("rtsps-basic")
        uri = f"rtsps://127.0.0.1:{rtsps_port}/{stream}"
        try:
            status, hdrs = c.send("ANNOUNCE", uri, body=sdp())
            assert status == 401
            assert sorted(h.split()[0] for h in challenges(hdrs)) == ["Basic", "Digest"]
            wrong = base64.b64encode(f"{ADMIN[0]}:nope".encode()).decode()
            status, _ = c.send("ANNOUNCE", uri, {"Authorization": f"Basic {wrong}"}, sdp())
            assert status == 401
            token = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
            status, _ = c.send("ANNOUNCE", uri, {"Authorization": f"Basic {token}"}, sdp())
            assert status == 200
        finally:
            c.close()
        kv = boto3.session.Session().client(
            "kinesisvideo", endpoint_url=s.endpoint, region_name=REGION, verify=str(pki.ca),
            aws_access_key_id=ADMIN[0], aws_secret_access_key=ADMIN[1])
        assert kv.describe_stream(StreamName=stream)["StreamInfo"]["StreamName"] == stream
        assert ADMIN[1] not in s.log_text()
    finally:
        s.cleanup()
