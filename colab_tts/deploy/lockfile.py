"""Each system's committed lock: ``colab_tts/deploy/locks/SYSTEM.txt``, read and checked against the runner.

A lock is ``uv pip compile`` output for the system's Python on Linux x86-64 (``x86_64-manylinux_2_28``),
resolved against PyPI from upstream's requirement files at the pinned commit plus the runner's own pins
(``systems.Lock``), under a header that records all of it (``tools/deploy_locks.py`` writes it; the
header's ``command`` line is the exact resolver call, with ``--exclude-newer`` at the time ``# resolved:``
records and ``--generate-hashes``). The runner installs the lock with ``--no-deps --require-hashes``, so a new
release of anything upstream depends on cannot change what Colab installs and every file is checked against
its sha256. The packages with no wheel for the system's Python (``# sdists:``) build from source with the build
dependencies pinned and hashed in ``SYSTEM.build.txt`` (``--build-constraint``). ``make locks-check`` rebuilds
every lock and fails on any difference.

``check_lock`` (``env.deploy`` calls it before installing anything) refuses a lock that no longer
matches: another upstream commit or Python, a pin of the runner the locked version does not satisfy, a package the runner requires missing, an excluded package
present, inputs (pins, overrides, excludes) changed since it was resolved, or a lock that could not be rebuilt
or verified (no hashes, no ``--exclude-newer`` time, another uv, a missing or stale build constraint).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

LOCKS = Path(__file__).resolve().parent / "locks"
PLATFORM = "x86_64-manylinux_2_28"
UV_VERSION = "0.13.9"  # the uv that resolved the committed locks (their "resolved:" header); the runner installs it
# the sha256 of its Linux x86-64 and aarch64 wheels, as PyPI lists them (https://pypi.org/simple/uv/, PEP 691 JSON):
# the runner's pip install of uv is checked against these, as every locked package is against the lock
UV_WHEEL_SHA256 = (
    "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",  # manylinux_2_17_x86_64
    "2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25",  # musllinux_1_1_x86_64
    "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",  # manylinux_2_17_aarch64 (+musllinux)
    "ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375",  # manylinux_2_28_aarch64
)
TORCH_PACKAGES = ("torch", "torchaudio", "torchvision", "torchcodec")  # what a PyTorch index serves
_HEADER = re.compile(r"^# ([a-z-]+): (.*)$")


def normalize(name: str) -> str:
    """PEP 503 name: ``Jieba_Fast`` -> ``jieba-fast``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Lockfile:
    path: Path
    header: dict  # "# key: value" lines before the first requirement
    pins: dict  # normalized name -> pinned version
    sha256: str
    hashes: dict = None  # normalized name -> ["sha256:..."] when the lock carries hashes
    options: tuple = ()  # the build-option lines (``--no-binary NAME``), each recorded in the header

    def listed(self, key: str) -> list[str]:
        """A header entry holding a list ("a; b; c"), as a list ([] for "none")."""
        value = self.header.get(key, "none")
        return [] if value == "none" else [v.strip() for v in value.split(";")]


def lock_path(system_name: str) -> Path:
    return LOCKS / f"{system_name}.txt"


def build_constraint_path(system_name: str) -> Path:
    """The build dependencies of the lock's sdists, pinned and hashed (``uv pip install --build-constraint``)."""
    return LOCKS / f"{system_name}.build.txt"


# The lines the generator (uv pip compile --no-header --emit-build-options [--generate-hashes]) writes, and
# nothing else: a lock is read by an installer that would follow any --index-url, --extra-index-url,
# --find-links, -e, -r, -c, URL or path written into it by hand.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_PIN_LINE = re.compile(rf"^({_NAME})(\[{_NAME}(?:,{_NAME})*\])?==([A-Za-z0-9][A-Za-z0-9.+!_-]*)( \\)?$")
_HASH_LINE = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")
_COMMENT = re.compile(r"^ *#[^\\]*$")  # a comment ending in a backslash could join the next line
BUILD_OPTION = re.compile(rf"^--(?:no|only)-binary {_NAME}$")


def read_lock(path) -> Lockfile:
    """Parse a lock: its header, its ``name==version`` lines (each maybe followed by ``--hash`` lines) and the
    build options its header records. Any other line is refused with its number: one ValueError."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{path} holds non-ASCII bytes, which the generator never writes; regenerate the lock "
                         "with tools/deploy_locks.py") from None
    # uv ends a line at a bare CR too (a comment "# x\rOPTION" is read as a comment and an option): the
    # generator writes no control character but the newline, so any other is refused
    if m := re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text):
        number = text.count("\n", 0, m.start()) + 1
        raise ValueError(f"{path}:{number} holds a control character ({m[0]!r}), which the generator never writes "
                         "and uv may read as a line break; regenerate the lock with tools/deploy_locks.py")
    header, pins, hashes, options = {}, {}, {}, []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    expect_hash = None  # the pin whose hash lines come next
    for number, line in enumerate(lines, 1):
        def refuse(why, number=number, line=line):
            raise ValueError(f"{path}:{number} {why}: {line.strip()[:120]!r}; a lock holds only what "
                             "tools/deploy_locks.py writes: regenerate it")

        if expect_hash is not None:
            if not _HASH_LINE.match(line):
                refuse("should be a '--hash=sha256:...' line continuing the pin above")
            hashes[expect_hash].append(line.split("=", 1)[1].removesuffix(" \\"))
            expect_hash = expect_hash if line.endswith(" \\") else None
            continue
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            if not _COMMENT.match(line):
                refuse("is a comment the generator does not write")
            m = _HEADER.match(line)
            if m and not pins:
                header[m[1]] = m[2].strip()
            continue
        if line.startswith("-"):
            if line not in header_options(header):
                refuse("is an option line the lock's header does not record (# build-options)")
            options.append(line)
            continue
        m = _PIN_LINE.match(line)
        if not m:
            refuse("is not pinned with '=='" if "==" not in line else "is not a plain 'name==version' pin")
        name = normalize(m[1])
        if name in pins:
            refuse(f"pins {name} a second time")
        pins[name] = m[3]
        if m[4]:
            expect_hash = name
            hashes[name] = []
    if expect_hash is not None:
        raise ValueError(f"{path} ends inside the hashes of {expect_hash}; regenerate it with tools/deploy_locks.py")
    if hashes and set(hashes) != set(pins):
        raise ValueError(f"{path} has hashes for some pins only ({sorted(set(pins) - set(hashes))[:5]} have none); "
                         "regenerate it with tools/deploy_locks.py")
    return Lockfile(path, header, pins, hashlib.sha256(raw).hexdigest(), hashes or None, tuple(options))


def header_options(header: dict) -> list[str]:
    """The option lines a header's ``build-options`` entry allows; only ``--no-binary`` / ``--only-binary``."""
    value = header.get("build-options", "none")
    listed = [] if value == "none" else [v.strip() for v in value.split(";")]
    return [option for option in listed if BUILD_OPTION.match(option)]


def _requirement(line: str) -> tuple[str, object]:
    """``"numpy<2.0"`` -> ("numpy", SpecifierSet("<2.0")): the runner's pins carry no extras or markers."""
    from packaging.specifiers import SpecifierSet  # not packaging.requirements: a third of the import time

    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", line.strip())
    return m[1], SpecifierSet(m[2])


UPSTREAM_LOCK_INPUT = "upstream's uv.lock (exported)"


def recorded_inputs(spec) -> list[str]:
    """The ``inputs`` header entry a lock resolved from ``spec`` (a ``systems.Lock``) records."""
    return [*spec.inputs, *([UPSTREAM_LOCK_INPUT] if spec.upstream_lock else [])]


def mismatches(system, lock: Lockfile) -> list[str]:
    """Everything in ``lock`` that disagrees with what ``system`` (a ``systems.System``) declares."""
    spec, problems = system.lock, []
    expected = {"upstream": f"{system.repo} @ {system.commit}", "python": system.python, "platform": PLATFORM}
    for key, want in expected.items():
        if lock.header.get(key) != want:
            problems.append(f"{key} is {lock.header.get(key)!r} in the lock, the runner uses {want!r}")
    if ("--no-sources" in lock.header.get("command", "").split()) != spec.no_sources:
        problems.append(f"the lock was resolved {'with' if not spec.no_sources else 'without'} --no-sources, "
                        f"the runner declares no_sources={spec.no_sources}")
    for key, want in (("inputs", recorded_inputs(spec)), ("pins", spec.pins), ("overrides", spec.overrides),
                      ("excludes", spec.excludes)):
        if lock.listed(key) != list(want):
            problems.append(f"the lock was resolved with {key} {lock.listed(key)}, the runner declares {list(want)}")
    if lock.header.get("torch-index", "none") != (spec.torch_index or "none"):
        problems.append(f"torch-index is {lock.header.get('torch-index')!r} in the lock, the runner uses "
                        f"{spec.torch_index or 'none'!r}")
    for line in (*spec.pins, *spec.overrides):
        name, specifier = _requirement(line)
        version = lock.pins.get(normalize(name))
        if version is None:
            problems.append(f"{name} (the runner requires {line}) is not in the lock")
        elif not specifier.contains(version, prereleases=True):
            problems.append(f"the lock has {name}=={version}, which the runner's {line} excludes")
    for name in spec.excludes:
        if normalize(name) in lock.pins:
            problems.append(f"{name} is excluded by the runner but the lock installs it")
    return problems + reproducibility_problems(lock)


RESOLVED_AT = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z) \(--exclude-newer\) with uv (\S+) against \S+$")


def reproducibility_problems(lock: Lockfile) -> list[str]:
    """What keeps ``lock`` from being rebuilt byte for byte and verified at install: no hashes, no
    ``--exclude-newer`` date (or one the command does not pass), another uv, or a build constraint that is
    missing or was made for other sdists."""
    problems = []
    if lock.hashes is None:
        problems.append("the lock carries no hashes (uv pip compile --generate-hashes): an install would check "
                        "nothing")
    m = RESOLVED_AT.match(lock.header.get("resolved", ""))
    command = lock.header.get("command", "").split()
    if not m:
        problems.append(f"the lock's '# resolved:' records no --exclude-newer time: "
                        f"{lock.header.get('resolved')!r}")
    else:
        if m[2] != UV_VERSION:
            problems.append(f"the lock was resolved with uv {m[2]}, the runner installs uv {UV_VERSION}")
        if "--exclude-newer" not in command or command[command.index("--exclude-newer") + 1:][:1] != [m[1]]:
            problems.append(f"the lock's command does not pass --exclude-newer {m[1]}, the time it records")
    sdists, recorded = lock.listed("sdists"), lock.header.get("build-constraint", "none")
    for option in lock.options:  # a source build the build constraint does not cover would resolve its own
        name = normalize(option.split()[1])
        if option.startswith("--no-binary ") and (name not in lock.pins or name not in map(normalize, sdists)):
            what = "a package the lock does not pin" if name not in lock.pins else "a package '# sdists:' omits"
            problems.append(f"the lock's {option!r} names {what}: its build dependencies are not pinned")
    if "sdists" not in lock.header:
        problems.append("the lock does not list the packages that install from sdists (# sdists:)")
    elif sdists and recorded == "none":
        problems.append(f"{len(sdists)} packages install from sdists but the lock names no build constraint")
    elif sdists:
        try:
            build = committed_build_constraint(lock)
        except ValueError as err:
            problems.append(str(err))
        else:
            if build.listed("sdists") != sdists or build.header.get("resolved") != lock.header.get("resolved"):
                problems.append(f"{build.path.name} was made for other sdists or another date than the lock")
            for key, want in (("for", lock.path.name), ("python", lock.header.get("python")),
                              ("platform", lock.header.get("platform"))):
                if build.header.get(key) != want:  # another system's, or resolved for another interpreter
                    problems.append(f"{build.path.name} records {key} {build.header.get(key)!r}, the lock {want!r}")
            if build.hashes is None:
                problems.append(f"{build.path.name} carries no hashes")
    return problems


def committed_build_constraint(lock: Lockfile) -> Lockfile | None:
    """The build constraint a lock's header names (``# build-constraint: SYSTEM.build.txt``, beside it), or None."""
    name = lock.header.get("build-constraint", "none")
    if name == "none":
        return None
    path = lock.path.parent / name
    if not re.fullmatch(r"[a-z0-9-]+\.build\.txt", name) or not path.is_file():
        raise ValueError(f"the build constraint {name!r} the lock names is not a file beside it; regenerate "
                         "the lock with tools/deploy_locks.py")
    return read_lock(path)


def committed_lock(system_name: str) -> Lockfile:
    """The committed lock of ``system_name``, read once per version of the file (``plan()`` asks every time)."""
    path = lock_path(system_name)
    if not path.exists():
        raise ValueError(f"{system_name} has no lock at {path}; create it with "
                         f"python tools/deploy_locks.py {system_name} --upstream CLONE")
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _READ:
        _READ[key] = read_lock(path)
    return _READ[key]


_READ: dict = {}


def check_lock(system) -> Lockfile:
    """The system's lock, or one ValueError listing every mismatch and how to regenerate it."""
    lock = committed_lock(system.name)
    problems = mismatches(system, lock)
    if problems:
        raise ValueError(f"{lock.path} no longer matches the runner's requirements for {system.name}:"
                         + "".join(f"\n  - {p}" for p in problems)
                         + f"\nregenerate it: python tools/deploy_locks.py {system.name} --upstream CLONE "
                           "(a clone of upstream at the pinned commit)")
    return lock


def torch_pins(system, lock: Lockfile) -> list[str]:
    """``name==version`` of the lock's PyTorch packages, for the install from ``system.lock.torch_index``."""
    if not system.lock.torch_index:
        return []
    return [f"{n}=={lock.pins[n]}" for n in TORCH_PACKAGES if n in lock.pins]
