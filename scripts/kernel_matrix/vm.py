"""Boot one kernel under QEMU (TCG) and run one command inside it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .prepare import QBOOT, QEMU, cache_dir, initramfs, kernel_dir

# Environment variables handed to the guest command besides PATH, HOME, PWD
# and PYBPF_* (PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 is always set).
PASS_ENV = ["LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "CI", "VIRTUAL_ENV",
            "PYTHONPATH", "PYTEST_ADDOPTS"]

EXIT_TIMEOUT = 124
EXIT_BOOT_FAILURE = 125


@dataclass
class Result:
    status: int
    message: str      # one line: what happened
    detail: str = ""  # further lines (tail of the kernel log) on failure


def guest_env(extra: dict[str, str], series: str) -> dict[str, str]:
    env = {"PATH": guest_path(), "HOME": os.environ.get("HOME", "/root"),
           "PWD": os.getcwd(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    for name, value in os.environ.items():
        if name in PASS_ENV or name.startswith("PYBPF_"):
            env[name] = value
    env["PYBPF_MATRIX_KERNEL"] = series
    env.update(extra)
    return env


# ------------------------------------------------------- pyenv shims (slow under TCG)

def _is_shim(path: str) -> bool:
    return Path(path).parent.name == "shims" and "pyenv" in path


def _pyenv_which(name: str) -> str | None:
    try:
        out = subprocess.run(["pyenv", "which", name], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and path else None


def resolve_command(argv: list[str]) -> list[str]:
    """The command with its program by absolute path, pyenv shims resolved."""
    name = argv[0]
    path = name if "/" in name else shutil.which(name)
    if not path:
        return argv  # let the guest say it is not found
    if _is_shim(path):
        real = _pyenv_which(Path(path).name)
        if real is None and Path(path).name.startswith("python"):
            real = sys.executable
        path = real or path
    return [os.path.abspath(path), *argv[1:]]


def guest_path() -> str:
    """Host PATH with pyenv's shim directory replaced by the real bin directory."""
    parts = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")
    shims = [p for p in parts if p.endswith("/shims") and "pyenv" in p]
    if not shims:
        return ":".join(parts)
    real = _pyenv_which("python3") or sys.executable
    bindir = str(Path(real).parent)
    out = []
    for p in parts:
        if p in shims:
            p = bindir
        if p not in out:
            out.append(p)
    return ":".join(out)


# ------------------------------------------------------------------------ the VM

class _Pump(threading.Thread):
    """Copies one guest console to a host stream, prefixing lines if asked."""

    def __init__(self, fd: int, out, prefix: bytes, lock: threading.Lock):
        super().__init__(daemon=True)
        self.fd, self.out, self.prefix, self.lock = fd, out, prefix, lock

    def run(self) -> None:
        pending = b""
        while chunk := os.read(self.fd, 65536):
            if not self.prefix:
                with self.lock:
                    self.out.write(chunk)
                    self.out.flush()
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if lines:
                with self.lock:
                    self.out.write(b"".join(self.prefix + l + b"\n" for l in lines))
                    self.out.flush()
        if pending:
            with self.lock:
                self.out.write(self.prefix + pending + (b"\n" if self.prefix else b""))
                self.out.flush()
        os.close(self.fd)


_out_lock = threading.Lock()
_live: set[subprocess.Popen] = set()  # running QEMUs, for kill_all()
stopping = False  # set when interrupted: queued VMs do not start


def kill_all() -> None:
    for proc in list(_live):
        proc.kill()


def run(series: str, kver: str, argv: list[str], timeout: float,
        prefix: str = "", extra_env: dict[str, str] | None = None) -> Result:
    kdir = kernel_dir(kver)
    runs = cache_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in runs.iterdir():  # failed runs are kept for a day, for their logs
        if not old.name.startswith("last-") and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
    rundir = Path(tempfile.mkdtemp(prefix=f"{kver}-", dir=runs))
    ctl = rundir / "ctl"
    ctl.mkdir()
    workdir = os.getcwd()
    modtree = kdir / "lib" / "modules" / kver

    (ctl / "guest.env").write_text(
        f"KM_WORKDIR={shlex.quote(workdir)}\nKM_MODTREE={shlex.quote(str(modtree))}\n"
        f"KM_KCONFIG={shlex.quote(str(kdir / 'config'))}\n")
    env = guest_env(extra_env or {}, series)
    (ctl / "cmd.sh").write_text(
        f"cd {shlex.quote(workdir)} || exit 126\n"
        "exec /usr/bin/env -i "
        + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        + " " + shlex.join(argv) + "\n")

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    log_path = rundir / "kernel.log"
    p9 = "security_model=passthrough,multidevs=remap"
    cmd = [
        QEMU, "-accel", "tcg", "-M", "pc", "-cpu", "qemu64", "-m", "2G", "-smp", "1",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-monitor", "none", "-serial", f"file:{log_path}",
        "-bios", str(QBOOT),
        "-kernel", str(kdir / "vmlinux"),
        "-initrd", str(initramfs(kver)),
        "-append", "console=ttyS0 quiet panic=-1 oops=panic mitigations=off "
                   "8250.nr_uarts=1 random.trust_cpu=on rdinit=/init",
        "-fsdev", f"local,id=ctl,path={ctl},{p9}",
        "-device", "virtio-9p-pci,fsdev=ctl,mount_tag=ctl",
        "-fsdev", f"local,id=hostroot,path=/,readonly=on,{p9}",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=work,path={workdir},{p9}",
        "-device", "virtio-9p-pci,fsdev=work,mount_tag=work",
        "-device", "virtio-serial-pci,id=vser",
        "-chardev", f"file,id=out,path=/dev/fd/{out_w}",
        "-device", "virtconsole,chardev=out,bus=vser.0,nr=0",
        "-chardev", f"file,id=err,path=/dev/fd/{err_w}",
        "-device", "virtconsole,chardev=err,bus=vser.0,nr=1",
        "-device", "virtio-rng-pci",
    ]
    pre = prefix.encode()
    pumps = [_Pump(out_r, sys.stdout.buffer, pre, _out_lock),
             _Pump(err_r, sys.stderr.buffer, pre, _out_lock)]
    for p in pumps:
        p.start()
    qemu_log = open(rundir / "qemu.log", "wb")
    t0 = time.monotonic()
    if shutil.which("setpriv"):  # QEMU dies with this runner, whatever kills it
        cmd = ["setpriv", "--pdeathsig", "KILL", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qemu_log,
                            stderr=subprocess.STDOUT, pass_fds=(out_w, err_w))
    _live.add(proc)
    os.close(out_w)
    os.close(err_w)
    reaper = _Reaper(proc)
    try:
        timed_out = not reaper.wait(timeout)
        if timed_out:
            proc.kill()
            reaper.wait(None)
    except BaseException:
        proc.kill()
        reaper.wait(None)
        raise
    finally:
        _live.discard(proc)
        qemu_log.close()
        for p in pumps:
            p.join(timeout=10)
    elapsed = time.monotonic() - t0

    def read(name: str) -> str:
        try:
            return (ctl / name).read_text().strip()
        except OSError:
            return ""

    uname = read("uname") or kver
    status = read("status")
    times = ""
    try:
        t_init, t_start, t_end = (float(read(n)) for n in ("t_init", "t_start", "t_end"))
        times = f" (init at {t_init:.1f} s, command {t_end - t_start:.1f} s)"
    except ValueError:
        pass
    if timed_out:
        return Result(EXIT_TIMEOUT, f"{uname}: TIMEOUT after {timeout:g} s; "
                      f"kernel log: {log_path}", _tail(log_path, 5))
    if not status.lstrip("-").isdigit():
        what = status or ("the guest stopped without an exit status (boot failure "
                          f"or kernel crash; qemu exit {proc.returncode})")
        return Result(EXIT_BOOT_FAILURE, f"{uname}: GUEST FAILURE: {what}; "
                      f"kernel log: {log_path}, qemu log: {rundir / 'qemu.log'}",
                      _tail(log_path) + _tail(rundir / "qemu.log", 5))
    # Keep the logs of the last run of each kernel; drop the rest.
    last = runs / f"last-{kver}"
    shutil.rmtree(last, ignore_errors=True)
    last.mkdir()
    for name in ("kernel.log", "ctl/dmesg"):
        if (rundir / name).exists():
            (rundir / name).rename(last / Path(name).name)
    shutil.rmtree(rundir, ignore_errors=True)
    return Result(int(status), f"{uname}: exit status {status} after {elapsed:.1f} s{times}, "
                  f"QEMU used {reaper.cpu:.1f} s of CPU")


class _Reaper(threading.Thread):
    """Reaps QEMU with wait4(), keeping the CPU time it used (a loaded machine stretches the
    wall time; the CPU time is what a run costs)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.proc, self.cpu = proc, 0.0
        self.start()

    def run(self) -> None:
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
        except ChildProcessError:
            return
        self.cpu = usage.ru_utime + usage.ru_stime
        self.proc.returncode = os.waitstatus_to_exitcode(status)

    def wait(self, timeout: float | None) -> bool:
        """Whether QEMU has exited (within timeout seconds; None: however long it takes)."""
        self.join(timeout)
        return not self.is_alive()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join("\n    " + l for l in text)
