"""One-time preparation for the kernel matrix: host tools, kernels, initramfs.

Everything lands in the cache directory (default ~/.cache/pybpf-kernel-matrix,
or $PYBPF_MATRIX_CACHE), never in the repository:

    <cache>/kernels/<kver>/vmlinux              uncompressed kernel (PVH boot)
    <cache>/kernels/<kver>/config               its /boot/config-<kver> (shown in the guest)
    <cache>/kernels/<kver>/lib/modules/<kver>/  module tree (.ko, busybox depmod)
    <cache>/kernels/<kver>/initramfs.cpio       busybox + boot modules + init.sh
    <cache>/kernels/<kver>/package              the Debian package it came from
    <cache>/apt/<suite>/                        private apt sources and state for
                                                suites the system does not use (bullseye)
    <cache>/.lock                               held while preparing (the cache is shared)
"""

from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SH = HERE / "init.sh"

QEMU = "qemu-system-x86_64"
QBOOT = Path("/usr/share/qemu/qboot.rom")  # shipped by qemu-system-data
BUSYBOX = Path("/bin/busybox")  # must be the static one (busybox-static)
APT_PACKAGES = ["qemu-system-x86", "busybox-static", "zstd"]



@dataclass(frozen=True)
class Series:
    """Where a kernel series comes from: its Debian package name and apt suite."""

    pattern: re.Pattern[str]  # group 1: the kernel release, group 2: its ABI number
    suite: str | None         # fetched through a private apt state; None: the system's apt


# 6.1 is bookworm's own kernel; 6.12 comes from bookworm-security (both in the
# system's apt sources); 5.10 is Debian 11's, from the bullseye suite, through
# a private sources list and state that only this runner uses.
SERIES = {
    "5.10": Series(re.compile(r"^linux-image-(5\.10\.0-(\d+)-amd64)$"), "bullseye"),
    "6.1": Series(re.compile(r"^linux-image-(6\.1\.0-(\d+)-amd64)$"), None),
    "6.12": Series(re.compile(r"^linux-image-(6\.12\.(\d+)\+deb12-amd64)$"), None),
}
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

# Modules loaded by the init script before anything else (plus their
# dependencies); the rest of the tree is reachable through modprobe.
BOOT_MODULES = ["virtio_pci", "virtio_console", "virtio_rng",
                "9pnet_virtio", "9p", "overlay"]

INITRAMFS_FORMAT = "3"  # bump when the initramfs layout changes


class SetupError(Exception):
    pass


def log(msg: str) -> None:
    print(f"kernel-matrix: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    env = os.environ.get("PYBPF_MATRIX_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "pybpf-kernel-matrix"


# ---------------------------------------------------------------- host tools

def _busybox_is_static() -> bool:
    try:
        data = BUSYBOX.read_bytes()
    except OSError:
        return False
    return data[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in data[:4096]


def missing_tools() -> list[str]:
    missing = []
    if not shutil.which(QEMU) or not QBOOT.exists():
        missing.append("qemu-system-x86")
    if not _busybox_is_static():
        missing.append("busybox-static")
    if not shutil.which("zstd"):
        missing.append("zstd")
    for tool in ("apt-get", "apt-cache", "dpkg"):
        if not shutil.which(tool):
            raise SetupError(f"{tool} not found: this runner needs a Debian 12 host")
    return missing


def ensure_tools() -> None:
    missing = missing_tools()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SetupError("missing packages: " + " ".join(missing)
                         + " (run: apt-get install " + " ".join(missing) + ")")
    log("installing " + " ".join(missing))
    _apt_update_once()
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                    *missing], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                   stdout=subprocess.DEVNULL)
    still = missing_tools()
    if still:
        raise SetupError("still missing after apt-get install: " + " ".join(still))


_updated = False


def _apt_update_once() -> None:
    global _updated
    if not _updated:
        log("apt-get update")
        subprocess.run(["apt-get", "update", "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        _updated = True


@contextmanager
def cache_lock() -> Iterator[None]:
    """Hold the cache's lock: engineers share one cache, set-up must not interleave."""
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another kernel-matrix set-up to finish ({base / '.lock'})")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------- private apt state

def _private_apt_dir(suite: str) -> Path:
    return cache_dir() / "apt" / suite


def apt_options(suite: str | None) -> list[str]:
    """apt-get/apt-cache options using only the private sources and state of a suite.

    The system's sources list, lists and package caches are never touched.
    """
    if suite is None:
        return []
    d = _private_apt_dir(suite)
    return ["-o", f"Dir::Etc::sourcelist={d / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={d / 'lists'}",
            "-o", f"Dir::Cache={d / 'cache'}"]


def system_mirror() -> str:
    """The Debian mirror the system's apt already uses for its own release."""
    out = subprocess.run(["apt-get", "indextargets", "--format",
                          "$(REPO_URI) $(RELEASE) $(TARGET_OF)"],
                         capture_output=True, text=True, check=True).stdout
    codename = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                codename = line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 3]
    for uri, release, kind in rows:
        if kind == "deb" and release == codename:
            return uri
    for uri, release, kind in rows:
        if kind == "deb" and "-" not in release and uri.rstrip("/").endswith("/debian"):
            return uri
    raise SetupError("cannot tell which Debian mirror apt uses (apt-get indextargets "
                     f"lists no '{codename or 'debian'}' suite)")


_private_updated: set[str] = set()


def _private_update(suite: str) -> None:
    """apt-get update of the private state of a suite (once per run)."""
    if suite in _private_updated:
        return
    d = _private_apt_dir(suite)
    for sub in ("lists/partial", "cache/archives/partial"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    signed = f"[signed-by={ARCHIVE_KEYRING}] " if ARCHIVE_KEYRING.exists() else ""
    (d / "sources.list").write_text(f"deb {signed}{system_mirror()} {suite} main\n")
    log(f"apt-get update (private state for {suite} in {d})")
    subprocess.run(["apt-get", *apt_options(suite), "-o", "APT::Sandbox::User=root",
                    "update", "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    _private_updated.add(suite)


# ------------------------------------------------------------------- kernels

def _update_lists(suite: str | None) -> None:
    if suite is None:
        _apt_update_once()
    else:
        _private_update(suite)


def _private_lists_stale(suite: str, max_age: float = 86400) -> bool:
    """The private lists of a suite are missing or older than max_age seconds."""
    lists = _private_apt_dir(suite) / "lists"
    try:
        newest = max(p.stat().st_mtime for p in lists.glob("*_Packages*"))
    except (OSError, ValueError):
        return True
    return time.time() - newest > max_age


def newest_package(series: str) -> str:
    """Name of the newest linux-image package of a series in the apt lists.

    The system's lists are updated only when they have no such package; the
    private lists of a suite also when they are older than a day.
    """
    spec = SERIES[series]
    update = spec.suite is not None and _private_lists_stale(spec.suite)
    for _ in (0, 1):
        if update:
            _update_lists(spec.suite)
        out = subprocess.run(["apt-cache", *apt_options(spec.suite), "pkgnames",
                              "linux-image-"], capture_output=True, text=True).stdout
        found = [(int(m.group(2)), name) for name in out.split()
                 if (m := spec.pattern.match(name))]
        if found:
            return max(found)[1]
        update = True
    where = (f"the private {spec.suite} lists ({_private_apt_dir(spec.suite)})" if spec.suite
             else "the apt lists (6.12 comes from bookworm-security: is it in "
                  "/etc/apt/sources.list*?)")
    raise SetupError(f"no Debian package for kernel {series} in {where}")


def kernel_dir(kver: str) -> Path:
    return cache_dir() / "kernels" / kver


def prepared_kernels(series: str) -> list[str]:
    """Kernel versions of a series already in the cache, newest first."""
    base = cache_dir() / "kernels"
    pattern = SERIES[series].pattern
    found = []
    if base.is_dir():
        for d in base.iterdir():
            m = pattern.match("linux-image-" + d.name)
            if m and (d / "package").exists():
                found.append((int(m.group(2)), d.name))
    return [name for _, name in sorted(found, reverse=True)]


def fetch_kernel(series: str) -> str:
    """Make sure the newest kernel of a series is in the cache; return its version."""
    package = newest_package(series)
    m = SERIES[series].pattern.match(package)
    assert m is not None
    kver = m.group(1)
    kdir = kernel_dir(kver)
    if (kdir / "package").exists():
        return kver
    log(f"fetching {package}")
    kdir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=kdir.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        subprocess.run(["apt-get", *apt_options(SERIES[series].suite), "download", "-q",
                        "-o", "APT::Sandbox::User=root", package],
                       cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        deb = next(tmp.glob("*.deb"))
        tree = tmp / "tree"
        subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True)
        deb.unlink()
        new = tmp / kver
        new.mkdir()
        log(f"extracting vmlinux from {package}")
        (new / "vmlinux").write_bytes(extract_vmlinux(tree / "boot" / f"vmlinuz-{kver}"))
        shutil.copy(tree / "boot" / f"config-{kver}", new / "config")
        moddir = new / "lib" / "modules" / kver
        moddir.parent.mkdir(parents=True)
        shutil.move(str(_modules_src(tree, kver)), str(moddir))
        _decompress_modules(moddir)
        subprocess.run([str(BUSYBOX), "depmod", "-b", str(new), kver], check=True)
        (new / "package").write_text(deb.name + "\n")
        if kdir.exists():
            shutil.rmtree(kdir)
        new.rename(kdir)
    return kver


def _modules_src(tree: Path, kver: str) -> Path:
    for cand in (tree / "lib" / "modules" / kver, tree / "usr" / "lib" / "modules" / kver):
        if cand.is_dir():
            return cand
    raise SetupError(f"no module tree for {kver} in the package")


def _decompress_modules(moddir: Path) -> None:
    """busybox insmod/modprobe cannot read .ko.xz (6.12; 5.10 and 6.1 ship .ko): decompress."""
    packed = list(moddir.rglob("*.ko.xz"))
    if packed:
        log(f"decompressing {len(packed)} modules")
    for path in packed:
        path.with_suffix("").write_bytes(lzma.decompress(path.read_bytes()))
        path.unlink()


# Magic numbers of the compressors a bzImage payload may use.
_MAGICS = [
    (b"\xfd7zXZ\x00", ["xz", "-dc"]),
    (b"\x28\xb5\x2f\xfd", ["zstd", "-dc"]),
    (b"\x1f\x8b\x08", ["gzip", "-dc"]),
]


def extract_vmlinux(bzimage: Path) -> bytes:
    """The ELF kernel inside a bzImage (what scripts/extract-vmlinux does)."""
    data = bzimage.read_bytes()
    for magic, cmd in _MAGICS:
        start = 0
        while (pos := data.find(magic, start)) >= 0:
            start = pos + 1
            if magic.startswith(b"\xfd7zXZ"):
                try:
                    out = lzma.LZMADecompressor().decompress(data[pos:])
                except lzma.LZMAError:
                    continue
            else:
                if not shutil.which(cmd[0]):
                    continue
                # The payload is followed by other data: the tool complains
                # about it but has written the kernel by then.
                out = subprocess.run(cmd, input=data[pos:], capture_output=True).stdout
            if out[:4] == b"\x7fELF":
                return out
    raise SetupError(f"could not find an ELF kernel inside {bzimage}")


# ----------------------------------------------------------------- initramfs

def _boot_module_files(moddir: Path) -> list[str]:
    """Relative paths of BOOT_MODULES and their dependencies, in load order."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" in line:
            mod, rest = line.split(":", 1)
            deps[mod.strip()] = rest.split()
    by_name = {Path(p).name[:-3].replace("-", "_"): p for p in deps}
    builtin = {Path(p).name[:-3].replace("-", "_")
               for p in (moddir / "modules.builtin").read_text().split()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in BOOT_MODULES:
        if name in builtin:
            continue
        if name not in by_name:
            raise SetupError(f"module {name} not found in {moddir}")
        visit(by_name[name])
    return order


class _Cpio:
    """Minimal writer of the 'newc' cpio format the kernel unpacks."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1

    def _add(self, name: str, mode: int, data: bytes = b"", rdev=(0, 0)) -> None:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
            len(name_b), 0))
        self.ino += 1
        self.out += hdr.encode() + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name: str) -> None:
        self._add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._add(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._add(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._add("TRAILER!!!", 0)
        self.out += b"\0" * (-len(self.out) % 512)
        return bytes(self.out)


def initramfs(kver: str) -> Path:
    """Path of the kernel's initramfs, (re)built when init.sh or the layout changed."""
    kdir = kernel_dir(kver)
    moddir = kdir / "lib" / "modules" / kver
    init = INIT_SH.read_bytes()
    busybox = BUSYBOX.read_bytes()
    stamp = hashlib.sha256(init + busybox + INITRAMFS_FORMAT.encode()
                           + " ".join(BOOT_MODULES).encode()).hexdigest()
    target = kdir / "initramfs.cpio"
    stamp_file = kdir / "initramfs.stamp"
    if target.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return target

    cpio = _Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "ctl", "lower", "rw",
              "newroot", "boot-modules", "lib", "lib/modules", f"lib/modules/{kver}"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox, 0o755)
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True,
                             text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    cpio.symlink("sbin/modprobe", "../bin/busybox")  # /proc/sys/kernel/modprobe
    cpio.file("init", init, 0o755)
    names = []
    for rel in _boot_module_files(moddir):
        name = Path(rel).name
        cpio.file(f"boot-modules/{name}", (moddir / rel).read_bytes())
        names.append(name)
    cpio.file("boot-modules/order", ("\n".join(names) + "\n").encode())
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(cpio.finish())
    tmp.rename(target)
    stamp_file.write_text(stamp)
    return target


def prepare(series: str, refresh: bool = False) -> str:
    """Tools, kernel and initramfs for a series; returns the kernel version.

    Uses the newest kernel already cached unless refresh is set (or nothing
    is cached), in which case the newest one in the apt lists is fetched.
    """
    with cache_lock():
        ensure_tools()
        cached = prepared_kernels(series)
        if cached and not refresh:
            kver = cached[0]
        else:
            kver = fetch_kernel(series)
            for old in cached:  # ~500 MB each: keep only the current one
                if old != kver:
                    log(f"removing the older {old}")
                    shutil.rmtree(kernel_dir(old), ignore_errors=True)
        initramfs(kver)
    return kver
