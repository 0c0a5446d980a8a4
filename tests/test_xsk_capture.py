"""``pybpf xsk capture`` driven as a user would, inside a namespace it did not make, reading
traffic from the peer of a veth pair; tcpdump must read what it wrote."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import scale

from pybpf.testing.netns import veth_pair


def test_capture_writes_a_pcap_tcpdump_reads(tmp_path: Path) -> None:
    out = tmp_path / "cap.pcap"
    with veth_pair() as pair:
        cmd = ["ip", "netns", "exec", pair.local.namespace, sys.executable, "-m", "pybpf", "xsk", "capture",
               "--dev", pair.local.ifname, "--queue", "0", "--count", "20", "--write", str(out), "--mode", "skb",
               "--timeout", str(30 * scale.TIME)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with pair.peer.socket() as sender:
                deadline = time.monotonic() + 30 * scale.TIME
                i = 0
                while proc.poll() is None and time.monotonic() < deadline and i < 100_000:
                    sender.sendto(b"pybpf-capture-%d" % i, (pair.local.ip, 9999))
                    i += 1
                    time.sleep(0.005)
            stdout, stderr = proc.communicate(timeout=30 * scale.TIME)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, stderr
    assert "20 packets" in stderr
    read = subprocess.run(["tcpdump", "-nr", str(out)], capture_output=True, text=True, timeout=30)
    assert read.returncode == 0, read.stderr
    lines = read.stdout.strip().splitlines()
    assert len(lines) == 20 and all("10.199.0.2" in line and "9999" in line for line in lines)


def test_capture_bad_input_is_one_line() -> None:
    for args, words in ((["--dev", "nosuchdev0", "--count", "1"], "no network interface named 'nosuchdev0'"),
                        (["--dev", "lo", "--count", "0"], "count must be positive")):
        done = subprocess.run([sys.executable, "-m", "pybpf", "xsk", "capture", *args, "--write", "/dev/null"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr
