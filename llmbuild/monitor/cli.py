"""`llmbuild-monitor [proxy|golden] key=value ... [-m] [--follow] [--cfg job]`: the Hydra entry point.

    llmbuild-monitor logs=prod.jsonl build=outputs/my-model/latest       score logs, write a report (exit 5 on a breach)
    llmbuild-monitor logs=prod.jsonl --follow window=15m                 keep scoring a growing log; /metrics
    llmbuild-monitor proxy upstream=http://127.0.0.1:8080 listen=127.0.0.1:9090 log=prod.jsonl
    llmbuild-monitor golden endpoint=http://127.0.0.1:8080 build=outputs/demo/latest
    llmbuild-monitor -m logs=prod.jsonl scorer=lexical,nli scorer.model=PATH   one report per combination

The command picks the primary config in conf/monitor/ (monitor.yaml, proxy.yaml, golden.yaml); its keys,
the `scorer` and `thresholds` groups and every default are documented in llmbuild/monitor/config.py.
Every combination is composed and checked before any runs, so a bad key or value ends with one line
and exit 2. Exit codes: 0 done, 2 invalid input, 5 a monitoring threshold breached (or a golden
regression), 1 a bug.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from llmbuild.errors import BuildError, InvalidInput

PROG = "llmbuild-monitor"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "monitor"
COMMANDS = {"monitor": "monitor", "proxy": "proxy", "golden": "golden"}
EXAMPLES = {"logs": "logs=prod.jsonl", "upstream": "upstream=http://127.0.0.1:8080", "log": "log=prod.jsonl",
            "endpoint": "endpoint=http://127.0.0.1:8080", "build": "build=outputs/demo/latest",
            "scorer.model": "scorer.model=PATH_OR_HUB_ID", "scorer.endpoint": "scorer.endpoint=http://127.0.0.1:8080"}


def split(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(command, flags, overrides); `--follow` is the override follow=true."""
    command = "monitor"
    if argv and argv[0] in ("proxy", "golden"):
        command, argv = argv[0], argv[1:]
    flags, overrides = [], []
    it = iter(argv)
    for a in it:
        if a == "--follow":
            overrides.append("follow=true")
        elif a.startswith("-"):
            flags.append(a)
            if a in ("--cfg", "-c") and "=" not in a:
                nxt = next(it, None)
                if nxt is not None:
                    flags.append(nxt)
        else:
            overrides.append(a)
    unknown = [f for f in flags if f not in ("-m", "--multirun", "--cfg", "-c", "job", "all", "--help", "-h")]
    if unknown:
        raise InvalidInput(f"unknown option {unknown[0]}; options: -m, --follow, --cfg job, --help")
    return command, flags, overrides


def compose(command: str, overrides: list[str]):
    """The composed and typed config (a dataclass from config.py); InvalidInput on any composition error."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from llmbuild.cli import _error_line
    from llmbuild.monitor.config import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=COMMANDS[command], overrides=overrides)
        return cfg, OmegaConf.to_object(cfg)
    except Exception as e:  # Hydra and OmegaConf raise many types for a bad override
        from omegaconf.errors import MissingMandatoryValue

        key = getattr(e, "full_key", None)
        if isinstance(e, MissingMandatoryValue) and key:
            raise InvalidInput(f"{key}: required, e.g. `{PROG} {'' if command == 'monitor' else command + ' '}"
                               f"{EXAMPLES.get(key, key + '=...')}`") from None
        raise InvalidInput(_error_line(e)) from None
    finally:
        GlobalHydra.instance().clear()


def check(command: str, cfg) -> None:
    from llmbuild.monitor import config, metrics

    if command == "monitor":
        config.check_monitor(cfg, tuple(metrics.METRICS))
    elif command == "proxy":
        config.check_proxy(cfg)
    else:
        config.check_golden(cfg)


def run(command: str, cfg) -> int:
    if command == "proxy":
        from llmbuild.monitor.proxy import serve

        return serve(cfg)
    if command == "golden":
        from llmbuild.monitor.golden import run_golden

        return run_golden(cfg)
    if cfg.follow:
        from llmbuild.monitor.follow import run_follow

        return run_follow(cfg)
    from llmbuild.monitor.pipeline import run_once

    return run_once(cfg)


def _library_environment() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see llmbuild/cli.py: spinning threads on shared cores


def _need_extra() -> None:
    import importlib.util

    missing = [m for m in ("aiohttp", "prometheus_client", "rouge_score") if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidInput(f"{', '.join(missing)} not installed: pip install 'llmbuild[monitor]'")


def _main(argv: list[str]) -> int:
    from llmbuild.cli import _combinations

    if any(a in ("--help", "-h") for a in argv):
        print(__doc__)
        return 0
    _need_extra()
    command, flags, overrides = split(argv)
    multirun = any(f in ("-m", "--multirun") for f in flags)
    combos = _combinations(overrides) if multirun else [overrides]
    configs = []
    for combo in combos:
        raw, cfg = compose(command, combo)
        if "--cfg" in flags or "-c" in flags:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(raw))
            continue
        check(command, cfg)
        configs.append((combo, cfg))
    codes = []
    for combo, cfg in configs:
        if multirun:
            print(f"{PROG}: [{len(codes) + 1}/{len(configs)}] {' '.join(combo)}", file=sys.stderr)
        try:
            codes.append(run(command, cfg))
        except BuildError as e:
            if not multirun:
                raise
            print(f"{PROG}: error: {e}", file=sys.stderr)
            codes.append(e.exit_code)
    if not codes:
        return 0
    return max(codes) if all(c in (0, 2, 5) for c in codes) else 1


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _library_environment()
    try:
        code = _main(argv)
    except BuildError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; earlier reports and the history are intact", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `llmbuild-monitor --cfg job | head`: the reader left, nothing went wrong
        code = 0
    except Exception as e:  # a bug: one line here, the traceback in a log file
        from llmbuild.ui import bug_message

        print(f"{PROG}: error: {bug_message(e)}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
