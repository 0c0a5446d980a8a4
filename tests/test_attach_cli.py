"""``pybpf cgroup show|tree``, ``pybpf net show`` and ``pybpf link list|show|pin|detach``
against the real bpftool, on a child cgroup and network namespaces the test creates."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import probes
import pytest
from pybpf.testing.cgroups import child_cgroup

from pybpf import AttachType, CgroupFlags, ProgramType
from pybpf.asm import R0, Assembler
from pybpf.programs import Link, Program, ProgramSpec
from pybpf.testing.netns import NETNS_DIR, inside, namespace

BPFTOOL = shutil.which("bpftool") or "/usr/sbin/bpftool"
needs_bpftool = pytest.mark.skipif(not os.path.exists(BPFTOOL), reason="bpftool is not installed (apt install bpftool)")


def returning(prog_type: ProgramType, value: int, name: str, expected: AttachType | None = None) -> Program:
    return Program.load(ProgramSpec(prog_type, Assembler().mov64(R0, value).exit(), name=name, expected_attach_type=expected))


def ours(*words: str, json_out: bool = False, netns: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, sys.executable, "-m", "pybpf", *(["--json"] if json_out else []), *words],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def bpftool(*words: str, json_out: bool = False, netns: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, BPFTOOL, *(["-j"] if json_out else []), *words], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def cgroup() -> Iterator[str]:
    with child_cgroup() as path:
        yield path


@needs_bpftool
def test_cgroup_show_and_tree_match_bpftool(cgroup: str) -> None:
    probes.skip_if(probes.bpftool_cgroup_query(cgroup))
    for child in ("a", "a/b", "c"):
        os.mkdir(os.path.join(cgroup, child))
    with returning(ProgramType.SOCK_OPS, 1, "sockops") as ops, returning(ProgramType.CGROUP_SKB, 1, "skb_allow") as skb, \
            returning(ProgramType.CGROUP_SOCK_ADDR, 1, "connect4", AttachType.CGROUP_INET4_CONNECT) as connect:
        links = [ops.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS),
                 skb.attach_cgroup(f"{cgroup}/a/b", AttachType.CGROUP_INET_EGRESS, flags=CgroupFlags.ALLOW_OVERRIDE),
                 skb.attach_cgroup(f"{cgroup}/a/b", AttachType.CGROUP_INET_INGRESS),
                 connect.attach_cgroup(f"{cgroup}/c", AttachType.CGROUP_INET4_CONNECT, flags=CgroupFlags.NONE)]
        try:
            for words in (["cgroup", "show", cgroup], ["cgroup", "show", f"{cgroup}/a/b", "effective"],
                          ["cgroup", "show", f"{cgroup}/a"], ["cgroup", "tree", cgroup], ["cgroup", "tree", cgroup, "effective"]):
                assert ours(*words) == bpftool(*words), words
                assert ours(*words, json_out=True) == bpftool(*words, json_out=True), words
        finally:
            for link in links:
                link.close()


def _normalized(text: str) -> object:
    """bpftool's net JSON with its invalid flow dissector array (``["id":N]``) made valid."""
    return json.loads(re.sub(r'"flow_dissector":\["id":(\d+)\]', r'"flow_dissector":[{"id":\1}]', text))


@needs_bpftool
def test_net_show_matches_bpftool() -> None:
    with namespace() as ns:
        assert ours("net", "show", netns=ns) == bpftool("net", "show", netns=ns)
        subprocess.run(["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
        with returning(ProgramType.FLOW_DISSECTOR, 0, "dissect") as dissect, returning(ProgramType.XDP, 2, "xdp_pass") as xdp, \
                returning(ProgramType.SCHED_CLS, 0, "tc_ok") as tc:
            with dissect.attach_netns(os.path.join(NETNS_DIR, ns)):
                with inside(ns):
                    held = [xdp.attach_xdp("lo"), tc.attach_tc("lo", mechanism="netlink"),
                            tc.attach_tc("v0", "egress", mechanism="netlink")]
                for words in (["net", "show"], ["net", "show", "dev", "v0"], ["net", "list"]):
                    assert ours(*words, netns=ns) == bpftool(*words, netns=ns), words
                    assert json.loads(ours(*words, json_out=True, netns=ns)) == _normalized(bpftool(*words, json_out=True, netns=ns))
                with inside(ns):
                    held.append(tc.attach_tc("lo", "egress", mechanism="tcx") if _tcx() else tc.attach_tc("lo", "egress"))
                text = ours("net", "show", netns=ns)
                if _tcx():  # the newer bpftool's line for a tcx link
                    assert re.search(rf"^lo\(1\) tcx/egress tc_ok prog_id {tc.id} link_id {held[-1].id} $", text, re.M)
                for link in held:
                    link.close()


def _tcx() -> bool:
    from pybpf.programs.tc import have_tcx

    return have_tcx()


def _without_pids(record: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in record.items() if k != "pids"}


@needs_bpftool
def test_link_show_matches_bpftool_and_names_holders(cgroup: str) -> None:
    with namespace() as ns, returning(ProgramType.SOCK_OPS, 1, "sockops") as ops, \
            returning(ProgramType.SK_LOOKUP, 1, "lookup", AttachType.SK_LOOKUP) as lookup:
        links = [ops.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS), lookup.attach_netns(os.path.join(NETNS_DIR, ns))]
        try:
            for link in links:
                mine = json.loads(ours("link", "show", "id", str(link.id), json_out=True))
                assert _without_pids(mine) == json.loads(bpftool("link", "show", "id", str(link.id), json_out=True))
                assert {"pid": os.getpid(), "comm": Path("/proc/self/comm").read_text().strip()} in mine["pids"]
                text = ours("link", "show", "id", str(link.id))
                assert text.startswith(bpftool("link", "show", "id", str(link.id)).rstrip("\n") + "\n\tpids ")
            listed = {r["id"] for r in json.loads(ours("link", "list", json_out=True))}
            assert {link.id for link in links} <= listed
        finally:
            for link in links:
                link.close()


def test_link_pin_and_detach(cgroup: str, pin_dir: Path) -> None:
    with returning(ProgramType.SOCK_OPS, 1, "sockops") as ops:
        link = ops.attach_cgroup(cgroup, AttachType.CGROUP_SOCK_OPS)
        with link:
            ours("link", "pin", "id", str(link.id), str(pin_dir / "l"))
            assert ours("link", "detach", "pinned", str(pin_dir / "l"), json_out=True).strip() == "null"
            assert ours("cgroup", "show", cgroup) == ""
            with Link.from_pin(pin_dir / "l") as again:
                assert again.info().prog_id == 0 or again.info().id == link.id


def test_errors_are_one_line(cgroup: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pybpf", "link", "show", "id", "999999999"], capture_output=True, text=True)
    assert done.returncode == 255 and done.stderr.startswith("pybpf: error:") and "Traceback" not in done.stderr  # bpftool's status
    done = subprocess.run([sys.executable, "-m", "pybpf", "cgroup", "show", "/tmp"], capture_output=True, text=True)
    assert done.returncode == 255 and "not a cgroup v2 directory" in done.stderr
