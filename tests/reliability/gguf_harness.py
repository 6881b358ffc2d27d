"""Run one hostile GGUF case through every consumer of a file, classifying what happened.

`open_gguf` must succeed or raise `GGUFError`. On an opened file, independently: `ModelConfig.from_gguf`
plus `memory.estimate` (`GGUFError`), and `load_tokenizer` plus encode / decode / stream decode / chat
render (`TokenizerError` or `GGUFError`); `load_weights` with dequantisation (`GGUFError`) follows a
good config for files with real data under `weights_up_to` bytes. Anything else raised is a crash.
A case still running after `alarm_s` is stopped by SIGALRM; it, or any stage slower than `hang_s`,
is a hang.
"""

from __future__ import annotations

import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from gguf_loader.errors import GGUFError
from tests.reliability.gguf_mutator import Case
from tokenizer.errors import TokenizerError

ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "open": (GGUFError,),
    "config": (GGUFError,),
    "tokenizer": (TokenizerError, GGUFError),
    "weights": (GGUFError,),
}
PROBE_TEXT = "Hello world! <s> <|im_start|>user\n 123 héllo 🙂 \t\n"


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case (a BaseException so no `except Exception` swallows it)."""


@dataclass
class Outcome:
    seed: str
    number: int
    size: int
    results: dict[str, str] = field(default_factory=dict)  # stage -> "ok" or the exception class
    crashes: dict[str, str] = field(default_factory=dict)  # stage -> repr of an unexpected exception
    seconds: dict[str, float] = field(default_factory=dict)
    hang: bool = False
    open_rss_growth: int = 0  # bytes the process's peak RSS grew during open_gguf
    rss_growth: int = 0  # ... during the whole case


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _on_alarm(signum: int, frame: object) -> None:
    raise CaseTimeout()


def run_case(case: Case, workdir: Path, *, hang_s: float = 1.0, alarm_s: float = 10.0,
             weights_up_to: int = 4 << 20) -> Outcome:
    from gguf_loader.reader import open_gguf

    path = workdir / f"case-{case.seed}-{case.number}.gguf"
    case.write(path)
    out = Outcome(case.seed, case.number, case.size)
    rss_before = _peak_rss()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, alarm_s)
    gguf = None
    try:
        gguf = _stage(out, "open", lambda: open_gguf(path))
        out.open_rss_growth = _peak_rss() - rss_before
        if gguf is not None:
            config = _stage(out, "config", lambda: _config(gguf))
            _stage(out, "tokenizer", lambda: _tokenizer(gguf))
            if config is not None and case.data is not None and case.size <= weights_up_to:
                _stage(out, "weights", lambda: _weights(gguf, config))
    except CaseTimeout:
        out.hang = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if gguf is not None:
            gguf.close()
        path.unlink(missing_ok=True)
    out.hang = out.hang or any(s > hang_s for s in out.seconds.values())
    out.rss_growth = _peak_rss() - rss_before
    return out


def _stage(out: Outcome, stage: str, run):
    started = time.perf_counter()
    try:
        value = run()
        out.results[stage] = "ok"
        return value if value is not None else True
    except ALLOWED[stage] as exc:
        out.results[stage] = type(exc).__name__
    except Exception as exc:  # the point of the exercise: anything else is a finding
        out.results[stage] = type(exc).__name__
        out.crashes[stage] = f"{exc!r}"[:400]
    finally:
        out.seconds[stage] = time.perf_counter() - started
    return None


def _config(gguf):
    from gguf_loader import memory
    from gguf_loader.arch import ModelConfig

    config = ModelConfig.from_gguf(gguf)
    memory.estimate(config, gguf, "f16", ctx=min(config.context_length, 4096), batch=2)
    return config


def _tokenizer(gguf) -> None:
    from tokenizer import load_tokenizer

    tok = load_tokenizer(gguf)
    ids = tok.encode(PROBE_TEXT, parse_special=True)
    text = tok.decode(ids)
    decoder = tok.stream_decoder()
    streamed = "".join(decoder.feed(i) for i in ids) + decoder.flush()
    if streamed != text:
        raise AssertionError(f"stream decode {streamed!r} != decode {text!r}")
    if tok.chat_template is not None:
        tok.render_chat([{"role": "user", "content": "hi"}])


def _weights(gguf, config) -> None:
    from gguf_loader.arch import load_weights

    load_weights(gguf, config)
