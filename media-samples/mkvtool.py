#!/usr/bin/env python3
"""Small Matroska helper for the Freshet media samples (standard library only).

  mkvtool.py inspect FILE [--json]
      Walk the EBML tree and report, per Cluster, its timecode, size mode
      (known/unknown) and the blocks it holds (track, key flag, absolute
      timecode).  Checks that every Cluster's first block is a video key frame
      and that the first video block of every Cluster is a key frame.
      Exit status 0 when every Cluster starts with a video key frame, 1 if not.

  mkvtool.py kvs-layout IN OUT [--timecode-offset-ms N]
      Re-wrap IN (an ordinary ffmpeg/mkvmerge Matroska file) into the layout
      the Kinesis Video producer SDK (kvssink) sends as a PutMedia body:
        EBML header
        Segment (unknown size)
          Info (SegmentUID, TimecodeScale, MuxingApp, WritingApp; no Duration)
          Tracks
          Cluster (unknown size): Timecode (8-byte uint), Position 0,
                                  SimpleBlocks (8-byte size field) ...
          Cluster ...
      No SeekHead, Void, CRC-32, Cues or Tags.  A new Cluster starts at every
      video key frame (one Cluster per GOP, the key frame is its first block);
      blocks that come before the first video key frame are dropped (the
      producer SDK also starts a stream on a key frame).  Frame payloads and
      absolute timestamps are copied unchanged, plus the optional offset.
"""
import argparse
import json
import os
import struct
import sys

# Element IDs (with the length marker kept, as written in the spec).
EBML = 0x1A45DFA3
SEGMENT = 0x18538067
SEEKHEAD = 0x114D9B74
INFO = 0x1549A966
TRACKS = 0x1654AE6B
TRACKENTRY = 0xAE
TRACKNUMBER = 0xD7
TRACKTYPE = 0x83
CODECID = 0x86
CODECPRIVATE = 0x63A2
TIMECODESCALE = 0x2AD7B1
DURATION = 0x4489
CLUSTER = 0x1F43B675
TIMECODE = 0xE7
POSITION = 0xA7
PREVSIZE = 0xAB
SIMPLEBLOCK = 0xA3
BLOCKGROUP = 0xA0
BLOCK = 0xA1
REFERENCEBLOCK = 0xFB
CUES = 0x1C53BB6B
TAGS = 0x1254C367
VOID = 0xEC
CRC32 = 0xBF

MASTER_IDS = {SEGMENT, INFO, TRACKS, TRACKENTRY, CLUSTER, BLOCKGROUP}
UNKNOWN = None


def read_id(buf, pos):
    first = buf[pos]
    length = 1
    mask = 0x80
    while length <= 4 and not first & mask:
        mask >>= 1
        length += 1
    if length > 4:
        raise ValueError("bad element id at %d" % pos)
    return int.from_bytes(buf[pos:pos + length], "big"), pos + length


def read_size(buf, pos):
    first = buf[pos]
    length = 1
    mask = 0x80
    while length <= 8 and not first & mask:
        mask >>= 1
        length += 1
    if length > 8:
        raise ValueError("bad element size at %d" % pos)
    value = first & (mask - 1)
    for b in buf[pos + 1:pos + length]:
        value = (value << 8) | b
    if value == (1 << (7 * length)) - 1:
        value = UNKNOWN
    return value, pos + length


def children(buf, start, end, parent_id=None):
    """Yield (id, data_start, data_end) for elements in buf[start:end].

    An unknown-size element ends where the next element that cannot be its
    child begins (for Clusters: the next Cluster, Cues, Tags, ...).
    """
    pos = start
    while pos < end:
        eid, p = read_id(buf, pos)
        size, p = read_size(buf, p)
        if size is UNKNOWN:
            if eid == SEGMENT:
                data_end = end
            elif eid == CLUSTER:
                data_end = p
                while data_end < end:
                    cid, q = read_id(buf, data_end)
                    if cid in (CLUSTER, CUES, TAGS, SEEKHEAD, INFO, TRACKS, EBML):
                        break
                    csize, q = read_size(buf, q)
                    if csize is UNKNOWN:
                        raise ValueError("unknown-size child in cluster")
                    data_end = q + csize
            else:
                raise ValueError("unknown size for element 0x%X" % eid)
        else:
            data_end = p + size
        if data_end > end:
            raise ValueError("element 0x%X at %d overruns its parent" % (eid, pos))
        yield eid, pos, p, data_end
        pos = data_end


def uint(buf, start, end):
    return int.from_bytes(buf[start:end], "big") if end > start else 0


def encode_size(n, width=None):
    if width is None:
        width = 1
        while n >= (1 << (7 * width)) - 1:
            width += 1
    if n >= (1 << (7 * width)) - 1:
        raise ValueError("size %d does not fit in %d bytes" % (n, width))
    return ((1 << (7 * width)) | n).to_bytes(width, "big")


def encode_id(eid):
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big")


def element(eid, payload, size_width=None):
    return encode_id(eid) + encode_size(len(payload), size_width) + payload


def parse_file(buf):
    """Return (ebml_header_bytes, info, tracks, clusters).

    info:     list of (id, raw element bytes) children of Info
    tracks:   {track_number: {"type": int, "codec": str}}, plus raw children
    clusters: list of {"timecode", "unknown_size", "blocks": [...]}, each
              block {"track", "key", "abs", "payload" (after the 4-byte
              SimpleBlock header), "lacing_flags"}
    """
    ebml_raw = None
    info = []
    tracks = {}
    tracks_raw = []
    timecode_scale = 1000000
    clusters = []
    for eid, el_start, d0, d1 in children(buf, 0, len(buf)):
        if eid == EBML:
            ebml_raw = bytes(buf[el_start:d1])
        elif eid == SEGMENT:
            for sid, s_start, s0, s1 in children(buf, d0, d1):
                if sid == INFO:
                    for iid, i_start, i0, i1 in children(buf, s0, s1):
                        if iid == TIMECODESCALE:
                            timecode_scale = uint(buf, i0, i1)
                        info.append((iid, bytes(buf[i_start:i1])))
                elif sid == TRACKS:
                    for tid, t_start, t0, t1 in children(buf, s0, s1):
                        if tid != TRACKENTRY:
                            continue
                        tracks_raw.append((t_start, t0, t1))
                        num = ttype = None
                        codec = ""
                        private = b""
                        for fid, _, f0, f1 in children(buf, t0, t1):
                            if fid == TRACKNUMBER:
                                num = uint(buf, f0, f1)
                            elif fid == TRACKTYPE:
                                ttype = uint(buf, f0, f1)
                            elif fid == CODECID:
                                codec = bytes(buf[f0:f1]).decode("ascii", "replace")
                            elif fid == CODECPRIVATE:
                                private = bytes(buf[f0:f1])
                        tracks[num] = {"type": ttype, "codec": codec, "private": private}
                elif sid == CLUSTER:
                    cl = {"timecode": None, "unknown_size": read_size(buf, read_id(buf, s_start)[1])[0] is UNKNOWN,
                          "offset": s_start, "blocks": []}
                    for cid, c_start, c0, c1 in children(buf, s0, s1):
                        if cid == TIMECODE:
                            cl["timecode"] = uint(buf, c0, c1)
                        elif cid == SIMPLEBLOCK:
                            cl["blocks"].append(parse_block(buf, c0, c1, True, cl["timecode"]))
                        elif cid == BLOCKGROUP:
                            has_ref = False
                            blk = None
                            for gid, _, g0, g1 in children(buf, c0, c1):
                                if gid == BLOCK:
                                    blk = (g0, g1)
                                elif gid == REFERENCEBLOCK:
                                    has_ref = True
                            if blk:
                                b = parse_block(buf, blk[0], blk[1], False, cl["timecode"])
                                b["key"] = not has_ref
                                cl["blocks"].append(b)
                    clusters.append(cl)
    return ebml_raw, info, tracks, tracks_raw, timecode_scale, clusters


def parse_block(buf, d0, d1, simple, cluster_tc):
    if cluster_tc is None:
        raise ValueError("block before cluster Timecode")
    track, p = read_size(buf, d0)  # track number is a vint without marker
    rel = struct.unpack(">h", bytes(buf[p:p + 2]))[0]
    flags = buf[p + 2]
    return {
        "track": track,
        "rel": rel,
        "abs": cluster_tc + rel,
        "key": bool(flags & 0x80) if simple else None,
        "flags": flags,
        "payload": bytes(buf[p + 3:d1]),
        "simple": simple,
    }


def has_inband_sps(track, payload):
    """True if an AVC/HEVC frame carries its own sequence parameter set.

    Matroska stores AVC/HEVC frames as length-prefixed NAL units; the length
    size comes from avcC byte 4 / hvcC byte 21 (low two bits + 1).
    """
    codec, cp = track["codec"], track.get("private", b"")
    if codec == "V_MPEG4/ISO/AVC":
        nal_len = (cp[4] & 3) + 1 if len(cp) > 4 else 4
        is_sps = lambda b: b & 0x1F == 7
    elif codec == "V_MPEGH/ISO/HEVC":
        nal_len = (cp[21] & 3) + 1 if len(cp) > 21 else 4
        is_sps = lambda b: (b >> 1) & 0x3F == 33
    else:
        return None
    pos = 0
    while pos + nal_len < len(payload):
        n = int.from_bytes(payload[pos:pos + nal_len], "big")
        pos += nal_len
        if n == 0 or pos + n > len(payload):
            return False
        if is_sps(payload[pos]):
            return True
        pos += n
    return False


def video_tracks(tracks):
    return {n for n, t in tracks.items() if t["type"] == 1}


def inspect(path, as_json):
    with open(path, "rb") as f:
        buf = f.read()
    _, _, tracks, _, scale, clusters = parse_file(buf)
    vids = video_tracks(tracks)
    report = {"file": path, "timecode_scale_ns": scale,
              "tracks": {str(k): {"type": v["type"], "codec": v["codec"]} for k, v in sorted(tracks.items())},
              "cluster_count": len(clusters), "clusters": []}
    all_first_video_key = True
    all_first_block_video_key = True
    for i, cl in enumerate(clusters):
        blocks = cl["blocks"]
        first = blocks[0] if blocks else None
        first_video = next((b for b in blocks if b["track"] in vids), None)
        fv_key = bool(first_video and first_video["key"])
        fb_vkey = bool(first and first["track"] in vids and first["key"])
        all_first_video_key &= fv_key
        all_first_block_video_key &= fb_vkey
        counts = {}
        for b in blocks:
            counts[b["track"]] = counts.get(b["track"], 0) + 1
        vkeys = [b for b in blocks if b["track"] in vids and b["key"]]
        report["clusters"].append({
            "video_key_frames_with_inband_sps": sum(
                1 for b in vkeys if has_inband_sps(tracks[b["track"]], b["payload"])),
            "index": i,
            "timecode": cl["timecode"],
            "unknown_size": cl["unknown_size"],
            "blocks_per_track": {str(k): v for k, v in sorted(counts.items())},
            "video_key_frames": sum(1 for b in blocks if b["track"] in vids and b["key"]),
            "first_block": None if first is None else {
                "track": first["track"], "key": first["key"], "abs": first["abs"]},
            "first_video_block_is_key": fv_key,
            "first_block_is_video_key": fb_vkey,
        })
    report["every_cluster_first_video_block_is_key"] = all_first_video_key
    report["every_cluster_first_block_is_video_key"] = all_first_block_video_key
    report["one_video_key_frame_per_cluster"] = all(c["video_key_frames"] == 1 for c in report["clusters"])
    report["video_key_frames_with_inband_sps"] = sum(
        c["video_key_frames_with_inband_sps"] for c in report["clusters"])
    if as_json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print("%s: %d clusters, tracks %s" % (path, len(clusters), report["tracks"]))
        for c in report["clusters"]:
            fb = c["first_block"]
            print("  cluster %2d tc=%6s %s first=%s blocks=%s vkeys=%d" % (
                c["index"], c["timecode"], "unknown-size" if c["unknown_size"] else "sized",
                "track %d %s @%d" % (fb["track"], "key" if fb["key"] else "delta", fb["abs"]) if fb else "-",
                c["blocks_per_track"], c["video_key_frames"]))
        print("  every cluster's first block is a video key frame: %s" % all_first_block_video_key)
        print("  every cluster's first video block is a key frame: %s" % all_first_video_key)
        print("  exactly one video key frame per cluster: %s" % report["one_video_key_frame_per_cluster"])
        print("  video key frames carrying an in-band SPS: %d" % report["video_key_frames_with_inband_sps"])
    return 0 if all_first_block_video_key else 1


def kvs_layout(src, dst, offset_ms):
    with open(src, "rb") as f:
        buf = f.read()
    ebml_raw, info, tracks, tracks_raw, scale, clusters = parse_file(buf)
    if scale != 1000000:
        raise SystemExit("expected TimecodeScale 1000000 (1 ms), got %d" % scale)
    vids = video_tracks(tracks)
    if not vids:
        raise SystemExit("no video track in %s" % src)

    out = bytearray(ebml_raw)
    out += encode_id(SEGMENT) + b"\xFF"  # unknown size, 1 byte, as the SDK writes it
    info_payload = b"".join(raw for iid, raw in info if iid not in (DURATION, CRC32, VOID))
    out += element(INFO, info_payload)
    tracks_payload = bytearray()
    for t_start, t0, t1 in tracks_raw:
        entry = b"".join(bytes(buf[c_start:c1]) for cid, c_start, _, c1 in children(buf, t0, t1)
                         if cid not in (CRC32, VOID))
        tracks_payload += element(TRACKENTRY, entry)
    out += element(TRACKS, bytes(tracks_payload))

    blocks = [b for cl in clusters for b in cl["blocks"]]
    started = False
    dropped = 0
    cluster_tc = None
    n_clusters = 0
    for b in blocks:
        is_vkey = b["track"] in vids and b["key"]
        if not started and not is_vkey:
            dropped += 1
            continue
        started = True
        ts = b["abs"] + offset_ms
        if is_vkey:
            cluster_tc = ts
            n_clusters += 1
            out += encode_id(CLUSTER) + b"\xFF"
            out += encode_id(TIMECODE) + encode_size(8) + cluster_tc.to_bytes(8, "big")
            out += encode_id(POSITION) + encode_size(1) + b"\x00"
        rel = ts - cluster_tc
        if not -32768 <= rel <= 32767:
            raise SystemExit("block timecode %d too far from cluster timecode %d" % (ts, cluster_tc))
        flags = b["flags"] if b["simple"] else (0x80 if b["key"] else 0) | (b["flags"] & 0x0F)
        body = encode_size(b["track"]) + struct.pack(">hB", rel, flags) + b["payload"]
        out += encode_id(SIMPLEBLOCK) + encode_size(len(body), 8) + body
    with open(dst, "wb") as f:
        f.write(out)
    print("%s -> %s: %d clusters, %d blocks, %d dropped before the first video key frame" % (
        os.path.basename(src), os.path.basename(dst), n_clusters, len(blocks) - dropped, dropped), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inspect")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("kvs-layout")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--timecode-offset-ms", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "inspect":
        sys.exit(inspect(a.file, a.json))
    kvs_layout(a.src, a.dst, a.timecode_offset_ms)


if __name__ == "__main__":
    main()
