"""Bad inputs, tried as a careful user would, each in a fresh process, and classified automatically (issue 16).

Every case is a bad value, type, file or config given to the Python API or to a console script (``lc-train`` with
Hydra overrides, ``lc-bench``, ``lc-report``, ``lc-plot``, ``lc-oneshot``). It runs in its own subprocess with a
timeout, and gets one outcome:

* ``CLEAR``: it raised (or exited non-zero) with a message holding every group of substrings the case names: the
  argument or file, the bad value or what was found, and what is allowed or what to do;
* ``VAGUE``: an error, but the message misses one of those (a raw torch / zip / Hydra / Lightning message, a message
  that does not name the argument or the file), or it came only after training had started;
* ``SILENT``: no error: it ran on, or gave a wrong result (result cases name their check);
* ``CODE-RAN``: a crafted file ran code (its payload writes the file that ``$LC_BAD_MARKER`` names);
* ``OK``: only for cases where working is a right answer (``ckpt_path=last`` resuming, a summary that matches the
  checkpoint it tested): it ran and the check found the result right;
* ``TIMEOUT``: it did not finish in time.

The library under test is the one on ``--checkout`` (put first on ``PYTHONPATH``); the cases use public names that
exist both before issue 16 (commit 21d2050) and after it. Fixtures (damaged and crafted files, two tiny ``lc-train``
runs on the digits) are built first, with the checkout's own code.

Example:
    git worktree add /tmp/before_16 21d2050
    .venv/bin/python experiments/reliability/bad_inputs.py --checkout /tmp/before_16 \
        --out experiments/reliability/results_before.json
    .venv/bin/python experiments/reliability/bad_inputs.py --out experiments/reliability/results_after.json \
        --readme experiments/reliability/README.md
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES, Case  # noqa: E402
from fixtures import FIXTURE_CODE, prepare_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = ("CLEAR", "VAGUE", "SILENT", "CODE-RAN", "OK", "TIMEOUT")
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"

# Runs one API case: executes its code, then (if nothing was raised) its check; writes what happened as JSON.
HARNESS = r"""
import json, os, sys, traceback
from pathlib import Path
spec = json.loads(Path(sys.argv[1]).read_text())
out = {"raised": False}
ns = {"FIX": Path(spec["fix"]), "TMP": Path(spec["tmp"])}
exec("import torch\nfrom torch import nn\nimport lightning_compress as lc\ntorch.set_num_threads(1)", ns)
try:
    exec(compile(spec["code"], "<case>", "exec"), ns)
except BaseException as err:  # noqa: BLE001 - what the user would see is the point
    frames = traceback.extract_tb(err.__traceback__)
    out.update(raised=True, type=type(err).__name__, message=f"{type(err).__name__}: {err}",
               origin=frames[-1].filename if frames else "", case_frame=frames[-1].filename == "<case>")
else:
    if spec["check"]:
        try:
            out["wrong"] = eval(spec["check"], ns)
        except BaseException as err:  # noqa: BLE001
            out["wrong"] = f"the check itself failed: {type(err).__name__}: {err}"
Path(sys.argv[2]).write_text(json.dumps(out))
"""

_NOISE = (
    "Set the environment variable HYDRA_FULL_ERROR",
    "Error executing job with overrides",
    "Seed set to",
    "GPU available",
    "TPU available",
    "HPU available",
    "LOCAL_RANK",
    "💡 Tip",
    "litlogger",
    "is validated against ConfigStore schema",
    "This behavior is deprecated in Hydra",
    "automatic_schema_matching",
    "_run_hydra(",
    "warnings.warn(",
)


def error_message(output: str) -> tuple[str, str]:
    """The error a user reads at the end of a command's output, and the file of the innermost frame (if shown).

    With a Python traceback: the exception lines after its last frame. Without one (argparse, Hydra's composition
    errors): every line that is not a log line, a warning or Hydra's trailer.
    """
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if starts:
        i = starts[-1] + 1
        origin = ""
        while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
            match = re.match(r'\s+File "([^"]+)", line', lines[i])
            if match:
                origin = match.group(1)
            i += 1
        message = []
        for line in lines[i:]:
            if any(noise in line for noise in _NOISE):
                break
            message.append(line)
        return "\n".join(message).strip(), origin
    kept = []
    for line in lines:
        if any(noise in line for noise in _NOISE) or re.search(r"\w+Warning: ", line) or line.startswith("  warn"):
            continue
        kept.append(line)
    return "\n".join(kept).strip(), ""


def missing_groups(case: Case, message: str, folders: tuple[Path, ...] = ()) -> list[tuple[str, ...]]:
    """The substring groups of ``case.must`` that ``message`` does not satisfy (case-insensitive).

    The first group (the argument or the file) is looked for in the whole message; the others in the message with the
    paths under ``folders`` (the fixtures, the case's folder) taken out, so that a file's name never stands in for
    what a message must say about it.
    """
    whole = message.lower()
    bare = message
    for folder in folders:
        bare = re.sub(re.escape(str(folder)) + r"[^\s'\"]*", "<path>", bare)
    bare = bare.lower()

    def found(alt: str, text: str) -> bool:  # not inside a word: "valid" is not in "invalid", "use " not in "because "
        return re.search(r"(?<![a-z])" + re.escape(alt.lower()), text) is not None

    texts = [whole if i == 0 else bare for i in range(len(case.must))]
    return [group for group, text in zip(case.must, texts) if not any(found(alt, text) for alt in group)]


def env_for(checkout: Path, marker: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "PYTHONPATH")}
    env.update(
        PYTHONPATH=str(checkout),
        LC_BAD_MARKER=str(marker),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    return env


def _api_result(done: dict, result: dict) -> tuple[bool, str, str, object]:
    """What the harness wrote for an API case: raised, message, origin and the check's finding."""
    raised, message, origin = done["raised"], done.get("message", ""), done.get("origin", "")
    if raised and (
        (done.get("case_frame") and done.get("type") in ("NameError", "ImportError", "SyntaxError"))
        or "module 'lightning_compress' has no attribute" in message
    ):
        result["broken"] = True
    return raised, message, origin, done.get("wrong")


def _cli_result(
    case: Case, tmp: Path, fix: Path, output: str, status: int, result: dict
) -> tuple[bool, str, str, object]:
    """What a console script's output and exit status say: raised, message, origin and the check's finding."""
    raised = status != 0
    message, origin = error_message(output) if raised else ("", "")
    wrong = case.cli_check(tmp, fix, output) if case.cli_check and not raised else None
    if raised and "No module named 'lightning_compress.cli" in output:
        result["broken"] = True
    return raised, message, origin, wrong


def _classify(case: Case, fix: Path, tmp: Path, result: dict, raised: bool, message: str, origin: str,
              wrong: object) -> dict:  # fmt: skip
    result["message"] = message[-600:]
    result["origin"] = origin
    if (tmp / "CODE_RAN").exists():
        result.update(outcome="CODE-RAN", detail="the crafted file's payload ran")
    elif not raised:
        if case.may_succeed and wrong is None:
            result.update(outcome="OK", detail="worked, and the check found the result right")
        else:
            result.update(outcome="SILENT", detail=wrong or "no error: it ran on")
    elif case.late is not None and case.late(tmp):
        result.update(outcome="VAGUE", detail="the error came only after training had started")
    else:
        missing = missing_groups(case, message, (fix, tmp))
        if missing:
            result.update(outcome="VAGUE", detail="message lacks " + " / ".join("|".join(g) for g in missing))
        else:
            result.update(outcome="CLEAR", detail="")
    return result


def _header(case: Case) -> dict:
    return {"id": case.id, "area": case.area, "kind": case.kind, "owner": case.owner, "what": case.what}


def finished_case(case: Case, tmp: Path) -> dict | None:
    """The outcome of a case that finished in the kept folder ``tmp`` of an earlier (interrupted) run; None when it
    did not finish there (no ``result.json``; for a console script no ``exit_status.txt``), so it must run again.
    The fixture and case folders are those the case ran with (from its ``spec.json`` / its kept folder)."""
    result = _header(case)
    if case.code:
        spec, done = tmp / "spec.json", tmp / "result.json"
        if not (spec.is_file() and done.is_file()):
            return None
        paths = json.loads(spec.read_text())
        fix = Path(paths["fix"])
        found = _api_result(json.loads(done.read_text()), result)
    else:
        status, output, fix_file = tmp / "exit_status.txt", tmp / "output.txt", tmp / "fixtures.txt"
        if not (status.is_file() and output.is_file() and fix_file.is_file()):
            return None
        fix = Path(fix_file.read_text().strip())
        found = _cli_result(case, tmp, fix, output.read_text(), int(status.read_text()), result)
    return _classify(case, fix, tmp, result, *found)


def run_case(case: Case, checkout: Path, fix: Path, work: Path, timeout: float) -> dict:
    """Runs one case in a fresh process and classifies it."""
    tmp = work / case.id
    if tmp.exists():  # an unfinished case of a resumed run
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    marker = tmp / "CODE_RAN"
    env = env_for(checkout, marker)
    prepare_case(case, fix, tmp)
    result = _header(case)
    try:
        if case.code:
            spec = tmp / "spec.json"
            spec.write_text(json.dumps({"code": case.code, "check": case.check, "fix": str(fix), "tmp": str(tmp)}))
            proc = subprocess.run(
                [sys.executable, "-c", HARNESS, str(spec), str(tmp / "result.json")],
                cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout or case.timeout,
            )  # fmt: skip
            done = json.loads((tmp / "result.json").read_text()) if (tmp / "result.json").is_file() else None
            if done is None:  # the interpreter itself died (a crash in native code)
                message = error_message(proc.stdout + proc.stderr)[0] or f"exit status {proc.returncode}"
                done = {"raised": True, "message": message}
            found = _api_result(done, result)
        else:
            minilm = (fix / "minilm.txt").read_text().strip() if (fix / "minilm.txt").is_file() else "no-minilm"
            args = [a.format(FIX=fix, TMP=tmp, MINILM=minilm) for a in case.args]
            proc = subprocess.run(
                [sys.executable, "-m", f"lightning_compress.cli.{case.cli}", *args],
                cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout or case.timeout,
            )  # fmt: skip
            output = proc.stdout + "\n" + proc.stderr
            (tmp / "output.txt").write_text(output)
            (tmp / "fixtures.txt").write_text(str(fix))
            (tmp / "exit_status.txt").write_text(str(proc.returncode))  # last: the case has finished
            found = _cli_result(case, tmp, fix, output, proc.returncode, result)
    except subprocess.TimeoutExpired:
        if marker.exists():
            result.update(outcome="CODE-RAN", detail="the crafted file's payload ran (then no answer in time)")
        else:
            result.update(outcome="TIMEOUT", detail=f"no answer within {timeout or case.timeout:g} s")
        result.update(message="", origin="")
        return result
    return _classify(case, fix, tmp, result, *found)


def build_fixtures(checkout: Path, fix: Path) -> None:
    """Damaged and crafted files, and two tiny lc-train runs, made with the checkout's own code."""
    env = env_for(checkout, fix / "FIXTURE_MARKER")
    proc = subprocess.run([sys.executable, "-c", FIXTURE_CODE, str(fix), str(checkout)], env=env, cwd=fix.parent,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"building the fixtures failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def git_commit(checkout: Path) -> str:
    proc = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return proc.stdout.strip() + (" + uncommitted changes" if dirty else "")


def counts(results: list[dict]) -> dict[str, int]:
    found = collections.Counter(r["outcome"] for r in results)
    return {o: found.get(o, 0) for o in OUTCOMES if found.get(o, 0) or o in ("CLEAR", "VAGUE", "SILENT", "CODE-RAN")}


def merged(previous: list[dict], rerun: list[dict]) -> list[dict]:
    """``previous`` with the cases of ``rerun`` replaced (or added), in the catalog's order."""
    by_id = {r["id"]: r for r in previous}
    by_id.update({r["id"]: r for r in rerun})
    order = {c.id: i for i, c in enumerate(CASES)}
    return sorted(by_id.values(), key=lambda r: order.get(r["id"], len(order)))


def print_table(results: list[dict]) -> None:
    total = len(results)
    print(f"{total} cases: " + ", ".join(f"{k} {v}" for k, v in counts(results).items()))
    width = max(len(r["id"]) for r in results)
    for r in results:
        note = r["detail"] if r["outcome"] != "CLEAR" else r["message"].splitlines()[-1] if r["message"] else ""
        print(f"{r['id']:<{width}}  {r['outcome']:<8}  {r['owner']:<44}  {note[:110]}")


def _cell(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def readme_section(before: dict, after: dict) -> str:
    """The generated part of the README: counts before and after, and one row per case."""
    b = {r["id"]: r for r in before["cases"]}
    a = {r["id"]: r for r in after["cases"]}
    cb, ca = counts(before["cases"]), counts(after["cases"])
    lines = [
        BEGIN,
        f"Before: `{before['commit']}`; after: `{after['commit']}`. {len(a)} cases.",
        "",
        "| outcome | before | after |",
        "|---|---:|---:|",
    ]
    lines += [f"| {o} | {cb.get(o, 0)} | {ca.get(o, 0)} |" for o in OUTCOMES if cb.get(o, 0) or ca.get(o, 0)]
    for name, run in (("before", before), ("after", after)):
        if run.get("rerun"):
            lines += ["", f"Run again with `--only ... --update` ({name}): {', '.join(run['rerun'])}."]
    notes = dict.fromkeys(run["note"] for run in (before, after) if run.get("note"))
    lines += [line for note in notes for line in ("", f"Note: {note}")]
    lines += ["", "| case | area | what | owner | before | after | after: message or reason |", "|---" * 7 + "|"]
    for case_id, r in a.items():
        old = b.get(case_id, {}).get("outcome", "-")
        why = r["detail"] if r["outcome"] != "CLEAR" else r["message"]
        lines.append(f"| {case_id} | {r['area']} | {_cell(r['what'], 90)} | {r['owner']} | {old} | {r['outcome']} |"
                     f" {_cell(why)} |")  # fmt: skip
    lines.append(END)
    return "\n".join(lines)


def update_readme(readme: Path, out: Path) -> None:
    before_file, after_file = out.with_name("results_before.json"), out.with_name("results_after.json")
    if not (before_file.is_file() and after_file.is_file()):
        raise SystemExit(f"--readme needs both {before_file} and {after_file}")
    section = readme_section(json.loads(before_file.read_text()), json.loads(after_file.read_text()))
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} section to replace")
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + section + rest.split(END, 1)[1])
    print(f"updated {readme}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose library is tried")
    parser.add_argument("--out", type=Path, help="write the outcomes here as JSON")
    parser.add_argument("--readme", type=Path, help="rewrite the generated section of this README from the results")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per case (default: each case's own, ~60)")
    parser.add_argument("--only", nargs="+", help="run only these case ids (or id prefixes)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (fixtures, each case's files)")
    parser.add_argument("--update", action="store_true", help="with --only: replace those cases in --out's file")
    parser.add_argument("--resume", nargs="+", type=Path, metavar="WORK",
                        help="finish interrupted runs of the same checkout: the kept work folders (--keep) of earlier"
                        " runs; the first one's fixtures are reused and its cases folder is run into, each case that"
                        " finished in any of them is classified from its files, the others run")  # fmt: skip
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    if not (checkout / "lightning_compress" / "__init__.py").is_file():
        parser.error(f"--checkout {checkout} holds no lightning_compress package")
    cases = [c for c in CASES if not args.only or any(c.id.startswith(p) for p in args.only)]
    if not cases:
        parser.error(f"--only {args.only} matches no case")
    earlier: dict[str, dict] = {}
    if args.resume:
        work = args.resume[0].resolve()
        fix = work / "fixtures"
        if not fix.is_dir() or not any(fix.iterdir()):
            parser.error(f"--resume {work} holds no fixtures")
        for folder in args.resume:
            for case in cases:
                if case.id not in earlier and (folder / "cases" / case.id).is_dir():
                    found = finished_case(case, folder / "cases" / case.id)
                    if found is not None:
                        earlier[case.id] = found
        print(f"resuming {work}: {len(earlier)} cases finished earlier", file=sys.stderr, flush=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="lc_bad_"))
        fix = work / "fixtures"
        fix.mkdir()
    try:
        if not args.resume:
            print(f"building fixtures with {checkout} ...", file=sys.stderr, flush=True)
            build_fixtures(checkout, fix)
        todo = [c for c in cases if c.id not in earlier]
        print(f"running {len(todo)} cases, {args.jobs} at a time ...", file=sys.stderr, flush=True)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {c.id: pool.submit(run_case, c, checkout, fix, work / "cases", args.timeout) for c in todo}
            for future in concurrent.futures.as_completed(futures.values()):
                done = future.result()
                print(f"  {done['id']}: {done['outcome']}", file=sys.stderr, flush=True)
            results = [earlier[c.id] if c.id in earlier else futures[c.id].result() for c in cases]
    finally:
        if args.keep or args.resume:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    broken = [r["id"] for r in results if r.get("broken")]
    if broken:
        print(f"warning: these cases could not run on this checkout: {', '.join(broken)}", file=sys.stderr)
    rerun = sorted(c.id for c in cases) if args.only else []
    if args.update and args.out and args.out.is_file():
        previous = json.loads(args.out.read_text())
        results = merged(previous["cases"], results)
        rerun = sorted({*previous.get("rerun", []), *rerun})
    print_table(results)
    if args.out:
        payload = {"checkout": str(checkout), "commit": git_commit(checkout), "counts": counts(results),
                   "cases": results}  # fmt: skip
        if rerun:  # the cases run again with --only (--update kept the others of an earlier run)
            payload["rerun"] = rerun
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.readme:
        update_readme(args.readme, args.out or Path(__file__).with_name("results_after.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
