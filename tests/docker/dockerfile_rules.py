"""Structural rules for the Dockerfile, run by tests/docker/test_dockerfile.py without an engine.

dockerfile_parse gives the instructions; the stages, build arguments and dependencies between
stages are split out here. Each `check_*` rule returns the violations it finds (empty: none), so
a test can run it on the project's Dockerfile and on a bad one.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crescendo_operator.builders import TRAINER_MODULE
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TARGETS = ("operator", "trainer")
# An image that installed torch: a RUN naming torch, or installing an extra that pulls it.
TORCH_RUN = re.compile(r"torch|\[[^\]]*\b(trainer|local|dev)\b[^\]]*\]", re.IGNORECASE)
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")


# --- the parsed Dockerfile -------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # continuation lines joined
    line: int  # 1-based
    flags: dict[str, str] = field(default_factory=dict)  # leading --name=value options
    body: str = ""  # the value without its flags


@dataclass
class Stage:
    name: str  # the AS name, or the stage's index
    base: str  # the FROM image, build arguments substituted; or an earlier stage's name
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass(frozen=True)
class Dockerfile:
    args: dict[str, str]  # global ARG defaults (before the first FROM)
    stages: list[Stage]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def ancestry(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first (what the image inherits)."""
        chain = [stage]
        while (parent := self.stage(chain[-1].base)) is not None and parent not in chain:
            chain.append(parent)
        return chain

    def dependencies(self, stage: Stage) -> list[Stage]:
        """Every stage whose files reach this one: FROM, COPY --from and RUN --mount from=."""
        seen: list[Stage] = []
        todo = [stage]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.append(current)
            names = [current.base]
            names += [i.flags["from"] for i in current.all("COPY") if "from" in i.flags]
            for run in current.all("RUN"):
                names += [_mount_options(run).get("from", "")]
            todo += [s for n in names if (s := self.stage(n)) is not None]
        return seen


def _split_flags(value: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = value.strip()
    while match := re.match(r"--([\w-]+)(?:=(\S+))?\s+", rest):
        flags[match.group(1)] = match.group(2) or ""
        rest = rest[match.end() :]
    return flags, rest


def _mount_options(run: Instruction) -> dict[str, str]:
    mount = run.flags.get("mount", "")
    return dict(part.split("=", 1) for part in mount.split(",") if "=" in part)


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def parse_dockerfile(text: str) -> Dockerfile:
    parser = DockerfileParser(fileobj=io.BytesIO(), env_replace=False)
    parser.content = text
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        keyword, value, line = str(item["instruction"]), str(item["value"]), int(item["startline"])
        if keyword == "COMMENT":
            continue
        flags, body = _split_flags(value)
        instruction = Instruction(keyword, value, line + 1, flags, body)
        if keyword == "ARG" and not stages:
            name, _, default = body.partition("=")
            args[name.strip()] = default.strip().strip("\"'")
        elif keyword == "FROM":
            words = body.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, _substitute(words[0], args), line + 1))
        elif stages:
            stages[-1].instructions.append(instruction)
    return Dockerfile(args, stages)


def exec_form(instruction: Instruction | None) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD; None for shell form or no instruction."""
    if instruction is None:
        return None
    try:
        parsed = json.loads(instruction.body)
    except json.JSONDecodeError:
        return None
    if isinstance(parsed, list) and all(isinstance(word, str) for word in parsed):
        return [str(word) for word in parsed]
    return None


def last(df: Dockerfile, stage: Stage, keyword: str) -> Instruction | None:
    """The instruction in effect for the image: the last one in the stage or what it inherits."""
    for ancestor in df.ancestry(stage):
        found = ancestor.all(keyword)
        if found:
            return found[-1]
    return None


def key_values(df: Dockerfile, stage: Stage, keyword: str) -> dict[str, str]:
    """ENV or LABEL pairs in effect for the stage (`K=V ...`, or the legacy `K V`)."""
    pairs: dict[str, str] = {}
    for ancestor in reversed(df.ancestry(stage)):
        for instruction in ancestor.all(keyword):
            words = shlex.split(instruction.body)
            if words and "=" not in words[0]:
                pairs[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, equals, value = word.partition("=")
                if equals:
                    pairs[key] = value
    return pairs


# --- the rules: each returns its violations --------------------------------------------------


def check_targets(df: Dockerfile) -> list[str]:
    return [f"no target {name!r}" for name in TARGETS if df.stage(name) is None]


def check_pinned_bases(df: Dockerfile) -> list[str]:
    problems = []
    for stage in df.stages:
        image = stage.base
        if df.stage(image) is not None or image == "scratch" or "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        if "$" in image:
            problems.append(f"stage {stage.name}: FROM {image}: undefined build argument")
        elif not repository or "/" in tag:
            problems.append(f"stage {stage.name}: FROM {image}: untagged image")
        elif tag == "latest" or not EXACT_VERSION.search(tag):
            problems.append(f"stage {stage.name}: FROM {image}: not an exact version tag")
    return problems


def check_non_root_numeric_user(df: Dockerfile) -> list[str]:
    problems = []
    for name in TARGETS:
        stage = df.stage(name)
        user = None if stage is None else last(df, stage, "USER")
        if user is None:
            problems.append(f"target {name}: no USER, runs as root")
            continue
        match = re.fullmatch(r"(\d+)(:\d+)?", user.body)
        if match is None:
            problems.append(f"target {name}: USER {user.body} is not a numeric uid")
        elif int(match.group(1)) == 0:
            problems.append(f"target {name}: USER {user.body} is root")
    return problems


def check_exec_form_entrypoints(df: Dockerfile) -> list[str]:
    problems = []
    for name in TARGETS:
        stage = df.stage(name)
        if stage is None:
            continue
        for keyword in ("ENTRYPOINT", "CMD"):
            instruction = last(df, stage, keyword)
            if instruction is None and keyword == "ENTRYPOINT":
                problems.append(f"target {name}: no ENTRYPOINT")
            elif instruction is not None and exec_form(instruction) is None:
                problems.append(f"target {name}: {keyword} {instruction.body} is not exec form")
    return problems


def check_operator_without_torch(df: Dockerfile) -> list[str]:
    stage = df.stage("operator")
    if stage is None:
        return ["no target 'operator'"]
    problems = []
    for source in df.dependencies(stage):
        if "torch" in source.base.lower():
            problems.append(f"operator uses stage {source.name}, built on {source.base}")
        for run in source.all("RUN"):
            if TORCH_RUN.search(run.body):
                problems.append(
                    f"operator uses stage {source.name}, which installs torch (line {run.line})"
                )
    return problems


def check_trainer_launch(df: Dockerfile) -> list[str]:
    stage = df.stage("trainer")
    if stage is None:
        return ["no target 'trainer'"]
    entrypoint = exec_form(last(df, stage, "ENTRYPOINT"))
    cmd = exec_form(last(df, stage, "CMD")) or []
    problems = []
    if entrypoint != ["torchrun"]:
        problems.append(f"trainer: ENTRYPOINT {entrypoint} is not ['torchrun']")
    if not any(cmd[i : i + 2] == ["-m", TRAINER_MODULE] for i in range(len(cmd))):
        problems.append(f"trainer: CMD {cmd} does not run -m {TRAINER_MODULE}")
    return problems


# The one part of the build context a target may copy: the worked examples a job names as its
# `script` (they are the user's side of the contract, not the package, which comes as a wheel).
EXAMPLE_SOURCES = ("examples/",)


def _copies_only_examples(body: str) -> bool:
    sources = [w for w in body.split() if not w.startswith("--")][:-1]
    return bool(sources) and all(s in EXAMPLE_SOURCES for s in sources)


def check_wheel_built_once(df: Dockerfile) -> list[str]:
    builds = [
        (stage, run)
        for stage in df.stages
        for run in stage.all("RUN")
        for _ in re.finditer(r"pip wheel\b", run.body)
    ]
    if len(builds) != 1:
        return [f"the project wheel is built {len(builds)} times, not once"]
    builder, run = builds[0]
    problems = []
    if "--no-deps" not in run.body or not re.search(r"\s\.(\s|$)", run.body):
        problems.append(f"line {run.line}: not `pip wheel --no-deps .`")
    for name in TARGETS:
        stage = df.stage(name)
        if stage is None:
            continue
        if builder in df.ancestry(stage):
            problems.append(f"target {name} carries the wheel's build stage {builder.name}")
        elif builder not in df.dependencies(stage):
            problems.append(f"target {name} does not install the wheel from {builder.name}")
        for ancestor in df.ancestry(stage):
            for copy in ancestor.all("COPY") + ancestor.all("ADD"):
                if "from" not in copy.flags and not _copies_only_examples(copy.body):
                    problems.append(f"target {name} copies the build context (line {copy.line})")
    return problems


# --- .dockerignore ---------------------------------------------------------------------------


def ignore_patterns(text: str) -> list[tuple[bool, str]]:
    """(negated, pattern) per line, normalised the way Docker does (no leading or trailing /)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        patterns.append((negated, pattern))
    return patterns


def _matches(pattern: str, path: str) -> bool:
    if fnmatch.fnmatchcase(path, pattern):
        return True
    return pattern.startswith("**/") and _matches(pattern[3:], path)


def is_excluded(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides.

    fnmatch's `*` also crosses `/`, which Docker's does not: this errs towards "excluded", the
    safe side for a check that COPY sources are kept.
    """
    parts = posixpath.normpath(path).split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        if any(_matches(pattern, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def copy_sources(df: Dockerfile) -> list[str]:
    """Paths in the build context that some COPY/ADD (without --from) reads."""
    sources = []
    for stage in df.stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            if "from" in copy.flags:
                continue
            words = copy.body
            parsed = json.loads(words) if words.startswith("[") else shlex.split(words)
            sources += [str(word) for word in parsed[:-1]]
    return sources


def check_dockerignore(df: Dockerfile, ignore_text: str, root: Path) -> list[str]:
    patterns = ignore_patterns(ignore_text)
    problems = [
        f"{path} is not excluded" for path in (".git", ".venv") if not is_excluded(path, patterns)
    ]
    for source in copy_sources(df):
        relative = posixpath.normpath(source.lstrip("/"))
        if not (root / relative).exists():
            problems.append(f"COPY source {source} does not exist")
            continue
        needed = [relative]
        if (root / relative).is_dir():  # the files `pip wheel .` builds from
            needed += [
                path.relative_to(root).as_posix()
                for path in sorted((root / relative).rglob("*"))
                if path.is_file()
                and (path.suffix == ".py" or path.name == "py.typed")
                and "__pycache__" not in path.parts
            ]
        problems += [
            f"COPY source {path} is excluded by .dockerignore"
            for path in needed
            if is_excluded(path, patterns)
        ]
    return problems


# --- the project's Dockerfile ----------------------------------------------------------------

Check = Callable[[Dockerfile], list[str]]
RULES: dict[str, Check] = {
    "targets": check_targets,
    "pinned bases": check_pinned_bases,
    "non-root numeric user": check_non_root_numeric_user,
    "exec-form entrypoints": check_exec_form_entrypoints,
    "operator without torch": check_operator_without_torch,
    "trainer launch": check_trainer_launch,
    "wheel built once": check_wheel_built_once,
}


