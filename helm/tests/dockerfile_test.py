"""Checks of the repository's Dockerfile and .dockerignore that need no Docker
(scripts/chart-test):

- a build stage runs one `cargo build --release --locked` naming every
  package with a process binary, and copies out every binary;
- the final stages come from distroless (no shell), run as a numeric
  non-root USER, start their binary in exec form (no shell), and the default
  (last) stage holds every binary the chart runs;
- every binary links only what distroless/cc has (glibc, libm, libgcc_s), by
  `ldd` on the debug binaries when they are built;
- the build context that .dockerignore leaves is a loadable workspace
  (`cargo metadata --locked --offline` in a copy of exactly that context).

    python dockerfile_test.py REPO_ROOT
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BINARIES = {  # package -> binary
    "calbridge-scheduler": "calbridge-scheduler",
    "calbridge-adapter-sandbox": "calbridge-adapter-sandbox",
    "calbridge-adapter-caldav": "calbridge-adapter-caldav",
    "calbridge-adapter-google": "calbridge-adapter-google",
    "calbridge-adapter-microsoft": "calbridge-adapter-microsoft",
    "calbridge-cli": "calbridge",
}
DISTROLESS_CC_LIBS = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
                      "libpthread.so.0", "libdl.so.2", "librt.so.1", "ld-linux-aarch64.so.1"}


def instructions(text):
    """(instruction, arguments) per logical line, continuations joined."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def stages(text):
    args = {}
    result = []
    for ins, rest in instructions(text):
        if ins == "ARG" and not result:
            k, _, v = rest.partition("=")
            args[k] = v
        elif ins == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            image = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), ""), m.group(1))
            result.append({"from": image, "name": m.group(2), "ins": []})
        elif result:
            result[-1]["ins"].append((ins, rest))
    return result


def base_image(st, by_name):
    seen = st
    while seen["from"] in by_name:
        seen = by_name[seen["from"]]
    return seen["from"], seen


def check(root):
    fails = []
    text = (root / "Dockerfile").read_text()
    sts = stages(text)
    by_name = {s["name"]: s for s in sts if s["name"]}
    builds = [s for s in sts if any(i == "RUN" and "cargo build" in r for i, r in s["ins"])]
    if len(builds) != 1:
        fails.append(f"expected one stage running cargo build, found {len(builds)}")
        return fails
    build = builds[0]
    runs = [r for i, r in build["ins"] if i == "RUN" and "cargo build" in r]
    if len(runs) != 1:
        fails.append("the binaries are not built by one cargo invocation")
    cmd = runs[0]
    for flag in ("--release", "--locked"):
        if flag not in cmd.split():
            fails.append(f"cargo build without {flag}")
    for pkg, binary in BINARIES.items():
        if f"-p {pkg}" not in cmd:
            fails.append(f"cargo build does not name package {pkg}")
        if f"target/release/{binary}" not in cmd:
            fails.append(f"binary {binary} is not copied out of the build")
    if not build["from"].startswith("rust:"):
        fails.append(f"build stage from {build['from']}")
    finals = [s for s in sts if s is not build and not any(
        re.search(rf"--from={re.escape(s['name'] or '')}\b", r) for t in sts for i, r in t["ins"] if i == "COPY")
        and not any(t["from"] == s["name"] for t in sts)]
    if not finals or finals[-1] is not sts[-1]:
        fails.append("the last stage is not a final image")
    for s in finals:
        name = s["name"]
        image, _ = base_image(s, by_name)
        if not image.startswith("gcr.io/distroless/cc"):
            fails.append(f"{name}: based on {image}, not distroless/cc")
        chain = [s]
        while chain[-1]["from"] in by_name:
            chain.append(by_name[chain[-1]["from"]])
        users = [r for st in chain for i, r in st["ins"] if i == "USER"]
        if not users or not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[0]):
            fails.append(f"{name}: USER {users[:1]} is not a numeric non-root user")
        entry = [r for i, r in s["ins"] if i == "ENTRYPOINT"]
        if len(entry) != 1:
            fails.append(f"{name}: {len(entry)} ENTRYPOINTs")
            continue
        try:
            argv = json.loads(entry[0])
        except json.JSONDecodeError:
            fails.append(f"{name}: ENTRYPOINT not in exec form (it would need a shell)")
            continue
        if not re.fullmatch(r"/usr/local/bin/calbridge(-[a-z-]+)?", argv[0]) or "sh" in Path(argv[0]).name.split("-"):
            fails.append(f"{name}: ENTRYPOINT {argv}")
        for i, r in s["ins"]:
            if i in ("RUN", "SHELL", "CMD") and i != "CMD" or (i == "CMD" and not r.startswith("[")):
                fails.append(f"{name}: {i} {r} needs a shell in the final image")
    last = sts[-1]
    copied = " ".join(r for i, r in last["ins"] if i == "COPY")
    if "/out/bin/ " not in copied + " " and not all(b in copied for b in BINARIES.values()):
        fails.append("the default image does not hold every binary")
    return fails


def check_ldd(root):
    fails = []
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target")) / "debug"
    if not shutil.which("ldd"):
        return fails
    for binary in BINARIES.values():
        path = target / binary
        if not path.exists():
            print(f"dockerfile_test: {path} not built; its libraries are not checked")
            continue
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        libs = {Path(line.split()[0]).name for line in out.splitlines() if line.strip()}
        extra = libs - DISTROLESS_CC_LIBS
        if extra:
            fails.append(f"{binary} links {sorted(extra)}, which distroless/cc lacks")
    return fails


def dockerignore_rules(root):
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        neg = s.startswith("!")
        pat = s[1:] if neg else s
        rules.append((neg, pat.strip("/")))
    return rules


def ignored(rules, rel):
    """Whether Docker leaves `rel` out of the context: patterns in order, the
    last match wins, `!` re-includes, a pattern matching a directory matches
    everything under it, `**/` matches at any depth."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, pat in rules:
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p, pat[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatchcase(p, pat) and p.count("/") == pat.count("/") for p in prefixes)
        if hit:
            excluded = not neg
    return excluded


def dockerignore_kept(root):
    """The files of the working tree (as `docker build .` would send them)
    that .dockerignore keeps."""
    rules = dockerignore_rules(root)
    negations = [pat for neg, pat in rules if neg]
    kept = []
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # Prune a directory left out unless a `!` pattern may reach inside.
        dirs[:] = [d for d in dirs
                   if not (ignored(rules, rel_dir + d)
                           and not any(n.startswith(rel_dir + d + "/") for n in negations))]
        kept += [rel_dir + f for f in files if not ignored(rules, rel_dir + f)]
    return sorted(kept)


def check_context(root):
    fails = []
    kept = dockerignore_kept(root)
    for must in ("Cargo.lock", "Cargo.toml", "build.rs", "proto/calbridge/v1/scheduler.proto",
                 "services/scheduler/src/main.rs", "adapters/google/src/main.rs"):
        if must not in kept:
            fails.append(f"the build context lacks {must}")
    for f in kept:
        if f.startswith(("target/", ".git/", "fuzz/", "helm/", ".ci/")):
            fails.append(f"the build context includes {f}")
    with tempfile.TemporaryDirectory() as tmp:
        for f in kept:
            dst = Path(tmp) / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dst)
        r = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"],
                           cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            fails.append("the build context is not a loadable workspace: " + r.stderr.strip()[-500:])
        else:
            meta = json.loads(r.stdout)
            bins = {t["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
            missing = set(BINARIES.values()) - bins
            if missing:
                fails.append(f"the context's workspace lacks binaries {sorted(missing)}")
    return fails, len(kept)


def main(argv):
    root = Path(argv[0] if argv else ".").resolve()
    fails = check(root) + check_ldd(root)
    ctx_fails, n = check_context(root)
    fails += ctx_fails
    if fails:
        for f in fails:
            print(f"FAIL Dockerfile: {f}", file=sys.stderr)
        return 1
    print(f"ok   Dockerfile: one release build of {len(BINARIES)} binaries, distroless non-root exec-form images, "
          f"context of {n} files loads as a workspace")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
