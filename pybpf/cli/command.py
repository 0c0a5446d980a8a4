"""The command's frame: bpftool's grammar, verb registration, help, and errors as bpftool reports them.

``pybpf [OPTIONS] OBJECT VERB WORDS...``. ``-j/--json``, ``-p/--pretty``, ``-h/--help`` and
``-V/--version`` are taken from anywhere before ``--``, as bpftool's getopt permutes them. Objects
are listed in ``registry.OBJECTS``; a verb is one ``@verb`` function in its object's module, and
only the modules of the object named on the command line are imported (cold start).

An error is one line and a non-zero status, never a traceback: ``pybpf: error: ...`` on stderr,
or under ``--json`` ``{"error":"..."}`` on stdout as bpftool prints it. The status is bpftool's:
255 (its -1) unless the verb says otherwise (254 for a missing key, bpftool's -ENOENT).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from .helptext import object_help, plain, top_help, verb_help
from .jsonw import JsonWriter
from .registry import OBJECTS, ObjectEntry
from .words import CommandError, UsageError, Words

__all__ = ["CommandError", "Context", "UsageError", "Verb", "Words", "main", "verb"]

if TYPE_CHECKING:
    import argparse

STATUS_ERROR = 255
"""bpftool's exit status for a failed command (its ``return -1``)."""


class Context:
    """What a verb needs from the command line besides its words: the output mode and stdout."""

    def __init__(self, json: bool = False, pretty: bool = False) -> None:
        self.json = json or pretty
        self.pretty = pretty
        self.write: Callable[[str], object] = sys.stdout.write
        self._jw: JsonWriter | None = None

    @property
    def jw(self) -> JsonWriter:
        """The JSON document on stdout (``--json``): one per command, streamed as bpftool's is."""
        if self._jw is None:
            self._jw = JsonWriter(self.write, self.pretty)
        return self._jw

    def emit(self, value: Any) -> None:
        """Write ``value`` as the command's JSON document."""
        self.jw.value(value)

    def finish(self) -> None:
        """End the JSON document, if one was started."""
        if self._jw is not None:
            self._jw.close_all()
            self._jw.finish()
            self._jw = None

    def error(self, message: str) -> None:
        """Report ``message``: ``{"error": ...}`` in the JSON document, or a line on stderr."""
        if not self.json:
            sys.stderr.write(f"pybpf: error: {message}\n")
            return
        jw = self.jw
        if jw.in_object:
            jw.field("error", message)
        else:
            jw.value({"error": message})
        self.finish()


class Verb:
    """One registered verb: ``pybpf OBJECT NAME``, its function and its help."""

    def __init__(self, obj: str, names: tuple[str, ...], run: Callable[..., int | None], usage: str,
                 options: Callable[[argparse.ArgumentParser], None] | None, default: bool) -> None:
        self.obj, self.names, self.run, self.usage = obj, names, run, usage
        self.options, self.default = options, default

    @property
    def doc(self) -> str:
        """The help text: the function's docstring."""
        return plain(self.run.__doc__ or "")

    @property
    def name(self) -> str:
        """The verb's name ("" for an object that is the command itself, such as ``demo``)."""
        return self.names[0] if self.names else ""

    @property
    def summary(self) -> str:
        """The first line of the help."""
        return self.doc.split("\n", 1)[0]

    def synopsis(self) -> str:
        """``pybpf OBJECT VERB USAGE``."""
        return " ".join(part for part in ("pybpf", self.obj, " | ".join(self.names), self.usage) if part)


_VERBS: dict[str, list[Verb]] = {}


def verb(obj: str, *names: str, usage: str = "", options: Callable[[argparse.ArgumentParser], None] | None = None,
         default: bool = False) -> Callable[[Callable[..., int | None]], Callable[..., int | None]]:
    """Register the decorated function as ``pybpf OBJ NAME`` (further names are aliases).

    Without ``options`` the function is ``run(ctx: Context, words: Words)`` and reads bpftool-style
    words; with ``options(parser)`` it is ``run(ctx, args)`` with argparse's namespace. No names:
    the object itself is the command (``pybpf demo``). ``default``: run when no verb is given
    (``pybpf map`` shows maps, as ``bpftool map`` does). The docstring is the help text.
    """

    def register(run: Callable[..., int | None]) -> Callable[..., int | None]:
        _VERBS.setdefault(obj, []).append(Verb(obj, names, run, usage, options, default))
        return run

    return register


_FLAGS = {"-j": "json", "--json": "json", "-p": "pretty", "--pretty": "pretty", "-h": "help", "--help": "help",
          "-V": "version", "--version": "version"}
_SHORT = {"j": "json", "p": "pretty", "h": "help", "V": "version"}


def _split(argv: list[str]) -> tuple[set[str], list[str], int | None]:
    """Global options (anywhere before ``--``), the other words, and where ``--`` was (or None)."""
    flags: set[str] = set()
    words: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return flags, words + argv[i + 1 :], len(words)
        if arg in _FLAGS:
            flags.add(_FLAGS[arg])
        elif len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and all(c in _SHORT for c in arg[1:]):
            flags.update(_SHORT[c] for c in arg[1:])
        else:
            words.append(arg)
    return flags, words, None


def _match(word: str, names: list[str], what: str) -> str:
    """``word``, or the one name it is a prefix of (bpftool takes ``pybpf m s`` for ``map show``)."""
    if word in names:
        return word
    found = sorted({n for n in names if n.startswith(word)})
    if len(found) == 1:
        return found[0]
    if found:
        raise UsageError(f"'{word}' could be {' or '.join(found)}")
    raise UsageError(f"unknown {what} '{word}' (expected {', '.join(names)})")


def _load(obj: str, entry: ObjectEntry) -> list[Verb]:
    for module in entry.modules:
        __import__(module)  # not importlib.import_module: -X importtime then reports it
    return _VERBS.get(obj, [])


def _options_parser(v: Verb) -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog=" ".join(p for p in ("pybpf", v.obj, v.name) if p), description=v.doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    assert v.options is not None
    v.options(parser)
    return parser


def _exit_on_argparse(parser: argparse.ArgumentParser) -> None:
    """argparse reports its errors through our channel (one line, JSON under --json)."""

    def error(message: str) -> NoReturn:
        raise UsageError(message)

    parser.error = error  # type: ignore[method-assign]


def _message(err: BaseException) -> str:
    """One line for an exception: the kernel's errors without Python's ``[Errno N]`` prefix."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
        if err.filename is not None:
            text += f": {err.filename}"
        return text
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors are one line and a non-zero status, never a traceback."""
    flags, words, literal = _split(list(sys.argv[1:] if argv is None else argv))
    ctx = Context(json="json" in flags, pretty="pretty" in flags)
    status = STATUS_ERROR
    try:
        status = _run(ctx, flags, words, literal)
        ctx.finish()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except SystemExit as done:  # argparse's --help
        return done.code if isinstance(done.code, int) else 0
    except CommandError as err:
        ctx.error(_message(err))
        status = err.status if err.status is not None else _error_status(words)
    except (OSError, ValueError, TypeError, LookupError, MemoryError) as err:
        ctx.error(_message(err))
        status = _error_status(words)
    except Exception as err:  # a bug: still one line, the traceback on request
        if os.environ.get("PYBPF_TRACEBACK"):
            raise
        ctx.error(f"internal error: {type(err).__name__}: {_message(err)} (PYBPF_TRACEBACK=1 shows where)")
        status = STATUS_ERROR
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


def _error_status(words: list[str]) -> int:
    entry = OBJECTS.get(words[0]) if words else None
    return entry.error_status if entry is not None else STATUS_ERROR


def _run(ctx: Context, flags: set[str], words: list[str], literal: int | None) -> int:
    if "version" in flags:
        from .. import __version__

        if ctx.json:
            ctx.emit({"version": __version__})
        else:
            ctx.write(f"pybpf {__version__}\n")
        return 0
    if not words or words == ["help"]:
        if "help" in flags or words:
            ctx.write(top_help())
            return 0
        raise UsageError(f"expected an object ({', '.join(OBJECTS)}); pybpf --help says more")
    obj = _match(words[0], list(OBJECTS), "object")
    words[0] = obj
    entry = OBJECTS[obj]
    if entry.argparse:
        return _run_argparse(ctx, obj, entry, words[1:], literal, "help" in flags)
    verbs = _load(obj, entry)
    if words[1:2] == ["help"] and not any(v.name == "help" for v in verbs):
        ctx.write(object_help(obj, entry, verbs))
        return 0
    chosen, rest = _choose(verbs, words[1:], obj)
    if chosen is None or (chosen.names and len(words) == 1 and "help" in flags):
        if "help" in flags:
            ctx.write(object_help(obj, entry, verbs))
            return 0
        raise UsageError(f"expected a verb after '{obj}' ({', '.join(n for v in verbs for n in v.names)})")
    if "help" in flags:
        if chosen.options is not None:
            ctx.write(_options_parser(chosen).format_help())
        else:
            ctx.write(verb_help(chosen))
        return 0
    if chosen.options is not None:
        parser = _options_parser(chosen)
        _exit_on_argparse(parser)
        args = parser.parse_args(_with_separator(rest, literal, len(words) - len(rest)))
        args.json, args.pretty = ctx.json, ctx.pretty
        return int(chosen.run(ctx, args) or 0)
    optional = rest if literal is None else rest[: max(0, literal - (len(words) - len(rest)))]
    refused = next((w for w in optional if len(w) > 1 and w.startswith("-")), None)
    if refused is not None:
        raise UsageError(f"unrecognized option '{refused}' (a word starting with '-' goes after '--')")
    return int(chosen.run(ctx, Words(rest)) or 0)


def _choose(verbs: list[Verb], rest: list[str], obj: str) -> tuple[Verb | None, list[str]]:
    """The verb ``rest[0]`` names (exactly or by a unique prefix), else the object's own command,
    else the default verb when no word is left; with the words after it."""
    named = {n: v for v in verbs for n in v.names}
    if rest and named:
        word = rest[0]
        candidates = {named[word]} if word in named else {v for n, v in named.items() if n.startswith(word)}
        if len(candidates) == 1:
            return candidates.pop(), rest[1:]
        if candidates:
            raise UsageError(f"'{word}' could be {' or '.join(sorted(v.name for v in candidates))}")
    own = next((v for v in verbs if not v.names), None)
    if own is not None:
        return own, rest
    if rest:
        raise UsageError(f"unknown verb '{rest[0]}' for {obj} (expected {', '.join(named)})")
    return next((v for v in verbs if v.default), None), rest


def _with_separator(rest: list[str], literal: int | None, consumed: int) -> list[str]:
    """Put back a ``--`` the user gave (argparse has its own use for it)."""
    if literal is None:
        return rest
    at = max(0, literal - consumed)
    return rest[:at] + ["--"] + rest[at:]


def _run_argparse(ctx: Context, obj: str, entry: ObjectEntry, rest: list[str], literal: int | None, wants_help: bool) -> int:
    """An object that registers itself with argparse (``add_parser(subparsers)``), options its own."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(prog="pybpf")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in entry.modules:
        importlib.import_module(module).add_parser(sub)
    _exit_on_argparse(parser)
    for child in sub.choices.values():
        _exit_on_argparse(child)
        for action in child._actions:
            if isinstance(action, argparse._SubParsersAction):
                for grandchild in action.choices.values():
                    _exit_on_argparse(grandchild)
    argv = [obj, *_with_separator(rest, literal, 1)]
    if wants_help:
        ctx.write(_deepest(sub.choices[obj], rest).format_help().replace("``", ""))
        return 0
    args = parser.parse_args(argv)
    args.json, args.pretty = ctx.json, ctx.pretty
    return int(args.func(args) or 0)


def _deepest(parser: argparse.ArgumentParser, rest: list[str]) -> argparse.ArgumentParser:
    """The sub-command parser ``rest`` reaches (``reuseport status`` -> its parser), for ``--help``."""
    import argparse

    for word in rest:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser
