"""One-time preparation for the kernel matrix: host tools, kernels, initramfs.

Everything lands in the cache directory (default ~/.cache/pybpf-kernel-matrix,
or $PYBPF_MATRIX_CACHE), never in the repository:

    <cache>/kernels/<kver>/vmlinux              uncompressed kernel (PVH boot)
    <cache>/kernels/<kver>/lib/modules/<kver>/  module tree (.ko, busybox depmod)
    <cache>/kernels/<kver>/initramfs.cpio       busybox + boot modules + init.sh
    <cache>/kernels/<kver>/package              the Debian package it came from
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SH = HERE / "init.sh"

QEMU = "qemu-system-x86_64"
QBOOT = Path("/usr/share/qemu/qboot.rom")  # shipped by qemu-system-data
BUSYBOX = Path("/bin/busybox")  # must be the static one (busybox-static)
APT_PACKAGES = ["qemu-system-x86", "busybox-static", "zstd"]

# Kernel series -> regular expression for the Debian 12 package name.
# 6.1 is bookworm's own kernel; 6.12 comes from bookworm-security.
SERIES = {
    "6.1": re.compile(r"^linux-image-(6\.1\.0-(\d+)-amd64)$"),
    "6.12": re.compile(r"^linux-image-(6\.12\.(\d+)\+deb12-amd64)$"),
}

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


# ------------------------------------------------------------------- kernels

def newest_package(series: str) -> str:
    """Name of the newest linux-image package of a series in the apt lists."""
    pattern = SERIES[series]
    for attempt in (0, 1):
        out = subprocess.run(["apt-cache", "pkgnames", "linux-image-6."],
                             capture_output=True, text=True).stdout
        found = [(int(m.group(2)), name) for name in out.split()
                 if (m := pattern.match(name))]
        if found:
            return max(found)[1]
        if attempt == 0:
            _apt_update_once()
    raise SetupError(f"no Debian package for kernel {series} in the apt lists "
                     "(6.12 comes from bookworm-security: is it in /etc/apt/sources.list*?)")


def kernel_dir(kver: str) -> Path:
    return cache_dir() / "kernels" / kver


def prepared_kernels(series: str) -> list[str]:
    """Kernel versions of a series already in the cache, newest first."""
    base = cache_dir() / "kernels"
    pattern = SERIES[series]
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
    kver = SERIES[series].match(package).group(1)
    kdir = kernel_dir(kver)
    if (kdir / "package").exists():
        return kver
    log(f"fetching {package}")
    kdir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=kdir.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
                        package], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
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
    """busybox insmod/modprobe cannot read .ko.xz (6.12): decompress them all."""
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
