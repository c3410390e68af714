#!/usr/bin/env python3
"""Measure and verify the clips in media-samples/ (run by check-samples.sh).

For every clip:
  * decode check:  ffmpeg -v error -xerror -i FILE -f null -   (exit 0, no output)
  * ffprobe:       codecs, resolution, fps, duration, frame counts, key frames
  * Matroska:      Cluster count and key flags from `mkvinfo -v`, cross-checked
                   with mkvtool.py's own EBML walk.
Prints a Markdown table (the one in README.md) and exits 1 if any clip fails:
decode errors, a Cluster whose first video block is not a key frame, or (for
*.kvs.mkv and video-only clips) a Cluster whose first block is not the video
key frame.
"""
import json
import os
import re
import subprocess
import sys
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mkvtool  # noqa: E402

ORDER = ["h264-1s-gop.mkv", "h264-1s-gop.kvs.mkv", "h264-aac.mkv", "h264-aac.kvs.mkv",
         "h265-2s-gop.mkv", "h265-2s-gop.kvs.mkv", "h264-2s-gop.mp4"]


def run(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ffprobe_json(args):
    r = run(["ffprobe", "-v", "error"] + args + ["-of", "json"])
    if r.returncode != 0:
        raise RuntimeError("ffprobe %s: %s" % (args, r.stderr))
    return json.loads(r.stdout)


def decode_ok(path):
    r = run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", path, "-f", "null", "-"])
    out = (r.stdout + r.stderr).strip()
    return r.returncode == 0 and out == "", out


def stream_info(path, sel):
    j = ffprobe_json(["-count_frames", "-select_streams", sel, "-show_entries",
                      "stream=codec_name,profile,width,height,r_frame_rate,sample_rate,channels,nb_read_frames",
                      path])
    return j["streams"][0] if j.get("streams") else None


def video_packets(path):
    j = ffprobe_json(["-select_streams", "v:0", "-show_entries", "packet=pts_time,duration_time,flags", path])
    return j["packets"]


def mkvinfo_clusters(path):
    """Cluster count and per-cluster first block / first video block from `mkvinfo -v`."""
    r = run(["mkvinfo", "-v", path])
    if r.returncode not in (0, 1):  # 1 = warnings
        raise RuntimeError("mkvinfo %s: %s" % (path, r.stderr or r.stdout))
    video_tracks = set()
    cur_track = None
    clusters = []
    for line in r.stdout.splitlines():
        m = re.match(r"\|  \+ Track number: (\d+)", line)
        if m:
            cur_track = int(m.group(1))
        if re.match(r"\|  \+ Track type: video", line):
            video_tracks.add(cur_track)
        if re.match(r"\|\+ Cluster\b", line):
            clusters.append({"first": None, "first_video": None, "video_keys": 0})
            continue
        m = re.match(r"\| \+ (?:Simple block|Block): (key, )?.*?track number (\d+)", line)
        if m and clusters:
            c = clusters[-1]
            key, track = bool(m.group(1)), int(m.group(2))
            if c["first"] is None:
                c["first"] = (track, key)
            if track in video_tracks:
                if c["first_video"] is None:
                    c["first_video"] = key
                c["video_keys"] += key
    return video_tracks, clusters


def fmt_fps(rate):
    f = Fraction(rate)
    return str(f.numerator) if f.denominator == 1 else "%.3f" % float(f)


def main():
    files = [f for f in ORDER if os.path.exists(os.path.join(HERE, f))]
    extra = sorted(f for f in os.listdir(HERE) if f.endswith((".mkv", ".mp4")) and f not in ORDER)
    files += extra
    ok = True
    rows = []
    notes = []
    for name in files:
        path = os.path.join(HERE, name)
        dec, dec_out = decode_ok(path)
        if not dec:
            ok = False
            notes.append("%s: DECODE FAILED: %s" % (name, dec_out[:500]))
        v = stream_info(path, "v:0")
        a = stream_info(path, "a:0")
        fmt = ffprobe_json(["-show_entries", "format=duration", path])["format"]
        pk = video_packets(path)
        first_pts = float(pk[0]["pts_time"])
        last_end = max(float(p["pts_time"]) + float(p.get("duration_time") or 0) for p in pk)
        key_idx = [i for i, p in enumerate(pk) if "K" in p["flags"]]
        gops = sorted({b - a_ for a_, b in zip(key_idx, key_idx[1:] + [len(pk)])})
        rate = Fraction(v["r_frame_rate"])
        gop_txt = "/".join(str(g) for g in gops) + " fr"
        if len(gops) == 1:
            gop_txt = "%s fr (%g s)" % (gops[0], float(gops[0] / rate))
        codecs = "%s %s" % (v["codec_name"].upper(), v.get("profile", ""))
        if a:
            ch = {1: "mono", 2: "stereo"}.get(a.get("channels"), "%s ch" % a.get("channels"))
            codecs += " + %s-%s %s Hz %s" % (a["codec_name"].upper(), a.get("profile", ""), a["sample_rate"], ch)
        frames = v["nb_read_frames"]
        if a:
            frames += " v / %s a" % a["nb_read_frames"]
        dur = fmt.get("duration")
        dur_txt = ("%.3f s" % float(dur)) if dur not in (None, "N/A") else "N/A (no Duration)"
        span_txt = "%.3f s" % (last_end - first_pts)

        clusters_txt = "-"
        starts_txt = "n/a (MP4)"
        sps_txt = "-"
        if name.endswith(".mkv"):
            vtracks, cl = mkvinfo_clusters(path)
            n = len(cl)
            fv_key = sum(1 for c in cl if c["first_video"])
            fb_vkey = sum(1 for c in cl if c["first"] and c["first"][0] in vtracks and c["first"][1])
            one_key = all(c["video_keys"] == 1 for c in cl)
            # Independent EBML walk (mkvtool.py) must agree with mkvinfo.
            with open(path, "rb") as fh:
                _, _, tracks, _, _, mcl = mkvtool.parse_file(fh.read())
            vkeys = [(tracks[b["track"]], b["payload"]) for c in mcl for b in c["blocks"]
                     if b["track"] in vtracks and b["key"]]
            sps_txt = "%d/%d" % (sum(1 for t, p in vkeys if mkvtool.has_inband_sps(t, p)), len(vkeys))
            if len(mcl) != n:
                ok = False
                notes.append("%s: mkvinfo sees %d clusters, mkvtool.py %d" % (name, n, len(mcl)))
            clusters_txt = "%d%s" % (n, " (unknown size)" if all(c["unknown_size"] for c in mcl) else "")
            starts_txt = "%d/%d first block = video key; %d/%d first video block key" % (fb_vkey, n, fv_key, n)
            if fv_key != n or not one_key:
                ok = False
                notes.append("%s: a Cluster does not start its video with a key frame or holds != 1 GOP" % name)
            strict = name.endswith(".kvs.mkv") or a is None
            if strict and fb_vkey != n:
                ok = False
                notes.append("%s: a Cluster's first block is not a video key frame" % name)
            if not strict and fb_vkey != n:
                notes.append("%s: %d of %d Clusters open with an audio block (ffmpeg muxer's cached "
                             "audio packet) just before the video key frame" % (name, n - fb_vkey, n))
        size = os.path.getsize(path)
        rows.append([name, codecs.strip(), "%sx%s" % (v["width"], v["height"]), fmt_fps(v["r_frame_rate"]),
                     dur_txt, span_txt, gop_txt, str(len(key_idx)), sps_txt, frames, clusters_txt, starts_txt,
                     "%d (%.0f KiB)" % (size, size / 1024), "ok" if dec else "FAIL"])

    head = ["file", "codecs", "resolution", "fps", "duration (format)", "video span (packets)", "GOP",
            "key frames", "in-band SPS", "frames", "clusters", "cluster starts", "size (bytes)", "decode"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    total = sum(os.path.getsize(os.path.join(HERE, f)) for f in files)
    print()
    print("Total: %d bytes (%.0f KiB) in %d files." % (total, total / 1024, len(files)))
    for n in notes:
        print("- " + n)
    print()
    print("all checks passed" if ok else "CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
