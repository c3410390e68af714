"""Delivery-stream objects in every CompressionFormat, read back with Python's own
readers: GZIP (gzip), ZIP (zipfile: one entry named after the object), Snappy (the
framing format, parsed here chunk by chunk and also by cramjam's stream reader) and
HADOOP_SNAPPY (Hadoop's block layout, parsed here, raw Snappy blocks by cramjam)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

import cramjam
import pytest

from conftest import unique_name, wait_for
from test_firehose import firehose, objects, s3_config, server, wait_active  # noqa: F401 (server: the fixture)

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

RECORDS = [json.dumps({"n": i, "pad": "x" * (i % 500)}).encode() + b"\n" for i in range(3000)]


def deliver(server, fmt):
    fh = firehose(server.endpoint)
    bucket = f"compress-{fmt.lower().replace('_', '-')}"
    name = unique_name("fhc")
    fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_config(
        bucket, size=64, interval=1, CompressionFormat=fmt))
    wait_active(fh, name)
    for i in range(0, len(RECORDS), 500):
        out = fh.put_record_batch(DeliveryStreamName=name,
                                  Records=[{"Data": r} for r in RECORDS[i:i + 500]])
        assert out["FailedPutCount"] == 0
    want = b"".join(RECORDS)
    return name, wait_for(lambda: objects(server.data_dir, bucket), 20, f"a {fmt} object"), want


def unframe_snappy(data: bytes) -> bytes:
    """The Snappy framing format: chunks of (type, 3-byte little-endian length, body)."""
    assert data[:10] == b"\xff\x06\x00\x00sNaPpY", data[:10]
    out, at = bytearray(), 10
    while at < len(data):
        kind = data[at]
        length = int.from_bytes(data[at + 1:at + 4], "little")
        body = data[at + 4:at + 4 + length]
        assert len(body) == length
        if kind == 0x00:  # compressed: 4-byte masked CRC-32C, then raw Snappy
            out += bytes(cramjam.snappy.decompress_raw(body[4:]))
        elif kind == 0x01:  # uncompressed
            out += body[4:]
        else:
            assert kind >= 0x80, f"unskippable chunk type {kind:#x}"
        at += 4 + length
    return bytes(out)


def unblock_hadoop(data: bytes) -> bytes:
    out, at = bytearray(), 0
    while at < len(data):
        raw_len, chunk_len = struct.unpack(">II", data[at:at + 8])
        block = bytes(cramjam.snappy.decompress_raw(data[at + 8:at + 8 + chunk_len]))
        assert len(block) == raw_len
        out += block
        at += 8 + chunk_len
    return bytes(out)


@pytest.mark.parametrize("fmt, ext", [("GZIP", ".gz"), ("ZIP", ".zip"), ("Snappy", ".snappy"),
                                      ("HADOOP_SNAPPY", ".hsnappy")])
def test_objects_read_back_in_every_format(server, fmt, ext):
    name, objs, want = deliver(server, fmt)
    body = b""
    for key in sorted(objs):
        assert key.endswith(ext) and f"/{name}-1-" in key, key
        data = objs[key]
        if fmt == "GZIP":
            body += gzip.decompress(data)
        elif fmt == "ZIP":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                assert z.testzip() is None
                (info,) = z.infolist()
                assert info.filename == key.rsplit("/", 1)[1][:-len(ext)]
                assert info.compress_type == zipfile.ZIP_DEFLATED
                body += z.read(info)
        elif fmt == "Snappy":
            unframed = unframe_snappy(data)
            assert bytes(cramjam.snappy.decompress(data)) == unframed
            body += unframed
        else:
            body += unblock_hadoop(data)
        assert len(data) < len(want) / 2, "compressed"
    assert body == want
