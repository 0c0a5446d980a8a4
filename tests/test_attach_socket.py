"""Socket filters (SO_ATTACH_BPF) on loopback sockets: the filter drops, detach lets through,
and the kernel's refusals in words."""

from __future__ import annotations

import socket

import pytest

import pybpf
from pybpf import ProgramType
from pybpf.asm import R0, Assembler
from pybpf.errors import BPFError
from pybpf.programs import Program, ProgramSpec

SO_LOCK_FILTER = 44


def keep(length: int) -> Program:
    """A socket filter keeping the first ``length`` bytes of each packet (0: drop it)."""
    return Program.load(ProgramSpec(ProgramType.SOCKET_FILTER, Assembler().mov64(R0, length).exit(), name="keep"))


def pair() -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.2)
    return receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def test_filter_drops_then_detach_lets_through() -> None:
    receiver, sender = pair()
    with receiver, sender, keep(0) as drop:
        drop.attach_socket(receiver)
        sender.sendto(b"dropped", receiver.getsockname())
        with pytest.raises(TimeoutError):
            receiver.recv(100)
        pybpf.detach_socket(receiver)
        sender.sendto(b"through", receiver.getsockname())
        assert receiver.recv(100) == b"through"


def test_filter_by_fd_and_truncation() -> None:
    receiver, sender = pair()
    with receiver, sender, keep(8 + 3) as cut:  # a UDP socket's filter sees the datagram from its UDP header on
        cut.attach_socket(receiver.fileno())
        sender.sendto(b"abcdefgh", receiver.getsockname())
        assert receiver.recv(100) == b"abc"


def test_refusals_in_words() -> None:
    receiver, sender = pair()
    with receiver, sender:
        with pytest.raises(BPFError, match="the socket has no filter"):
            pybpf.detach_socket(receiver)
        with Program.load(ProgramSpec(ProgramType.SK_SKB, Assembler().mov64(R0, 1).exit())) as wrong:
            with pytest.raises(BPFError, match="a socket takes SOCKET_FILTER programs, not SK_SKB"):
                wrong.attach_socket(receiver)
        with keep(0) as drop:
            drop.attach_socket(receiver)
            receiver.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)
            with pytest.raises(BPFError, match="locked"):
                pybpf.detach_socket(receiver)
        with pytest.raises(TypeError, match="expected a socket"):
            pybpf.detach_socket("socket")  # type: ignore[arg-type]
