"""A Docker engine and a base image for the container test, made from nothing.

- ``find_or_start``: the engine the environment already points at (DOCKER_HOST or the
  default socket) when it answers; else Debian's ``docker.io`` (installed with apt-get when
  ``dockerd`` is missing, as root) started as a private daemon: its own socket and exec
  root in a temp dir, its pid kept and only that pid stopped. Its data root (images, build
  layers) is kept between runs in RUNNER_CONTAINER_CACHE (default
  ~/.cache/runner-container-test), locked so that two runs never share it; a second run
  at the same time gets a throw-away data root.
- ``ensure_base_image``: the image the Dockerfile's FROM names, pulled when a registry
  answers; else a STAND-IN made with debootstrap (Debian bookworm minbase with Debian's
  Python 3.11.2 in /usr/bin, where the official python:3.11-slim has 3.11.x in /usr/local)
  plus this host's extra CA certificates, imported under exactly that name.

The flags are those that work on these VMs (no bridge, no iptables, cgroupfs nested under
the shell's own memory cgroup): see shared/CONTAINER_FACTS.md. As a script:
``python tests/docker/engine.py start DIR`` prints the DOCKER_HOST line and leaves the
daemon running (``stop DIR`` ends it); ``base-image NAME`` makes the base image.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("RUNNER_CONTAINER_CACHE") or Path.home() / ".cache" / "runner-container-test")
DEBIAN_PACKAGES = ["docker.io", "docker-compose", "debootstrap"]
STAND_IN_PACKAGES = "ca-certificates,netbase,tzdata,python3,python3-venv,python-is-python3"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class Unavailable(Exception):
    """No Docker engine can be had on this machine (the reason says why)."""


@dataclass
class Engine:
    env: dict[str, str]
    started_pid: int | None = None  # our dockerd, None for an engine we found
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)
    _lock: object | None = None

    def docker(self, *args: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], env=self.env, text=True, capture_output=True,
                              timeout=timeout, check=check, **kw)

    def stop(self) -> None:
        """Stop our own dockerd (only its pid) and wait for it; no-op for a found engine."""
        if self.started_pid is None:
            return
        try:
            os.kill(self.started_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(self.started_pid):
            time.sleep(0.2)
        if _alive(self.started_pid):
            os.kill(self.started_pid, signal.SIGKILL)
        try:
            os.waitpid(self.started_pid, 0)
        except ChildProcessError:
            pass
        self.started_pid = None
        if self.workdir is not None:
            unmount_under(self.workdir)


def unmount_under(path: Path) -> None:
    """Lazily unmount what dockerd left mounted under ``path`` (its exec root's netns file)."""
    prefix = str(path.resolve()).rstrip("/") + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _answers(env: dict[str, str]) -> bool:
    if not shutil.which("docker", path=env.get("PATH")):
        return False
    try:
        return subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], env=env,
                              capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def install_packages(packages: list[str]) -> None:
    """apt-get install (after apt-get update), as root; Unavailable when that cannot be."""
    if os.geteuid() != 0:
        raise Unavailable(f"{' '.join(packages)} missing and not root: cannot apt-get install it")
    if not shutil.which("apt-get"):
        raise Unavailable(f"{' '.join(packages)} missing and no apt-get on this machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise Unavailable(f"{' '.join(argv)} failed: {proc.stderr.strip()[-500:]}")


def _own_memory_cgroup() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


def _data_root(workdir: Path) -> tuple[Path, object | None]:
    """The cached data root under an exclusive lock, or a fresh one if another run holds it."""
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        lock = open(CACHE / "lock", "w")  # noqa: SIM115 - held for the engine's life
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return CACHE / "data-root", lock
    except OSError:
        return workdir / "data-root", None


def find_or_start(workdir: Path | None = None) -> Engine:
    env = dict(os.environ)
    if _answers(env):
        return Engine(env=env, notes=["using the Docker engine this environment points at"])
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rct-", dir="/tmp"))
    notes = []
    missing = [p for p, exe in (("docker.io", "dockerd"), ("docker-compose", "docker-compose"),
                                ("debootstrap", "debootstrap")) if not shutil.which(exe)]
    if missing:
        install_packages(missing)
        notes.append(f"installed {' '.join(missing)} from Debian")
    workdir.mkdir(parents=True, exist_ok=True)
    data_root, lock = _data_root(workdir)
    notes.append(f"dockerd data root {data_root}" + (" (cached between runs)" if lock else " (throw-away)"))
    sock = workdir / "docker.sock"
    argv = ["dockerd", "--host", f"unix://{sock}", "--data-root", str(data_root),
            "--exec-root", str(workdir / "exec"), "--pidfile", str(workdir / "dockerd.pid"),
            "--storage-driver=overlay2", "--iptables=false", "--ip-forward=false",
            "--ip-masq=false", "--bridge=none", "--exec-opt", "native.cgroupdriver=cgroupfs"]
    cgroup = _own_memory_cgroup()
    if cgroup:
        argv += ["--cgroup-parent", f"{cgroup.rstrip('/')}/docker"]
    log = open(workdir / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes it
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    env["DOCKER_HOST"] = f"unix://{sock}"
    env.pop("DOCKER_CONTEXT", None)
    engine = Engine(env=env, started_pid=proc.pid, workdir=workdir, notes=notes, _lock=lock)
    deadline = time.monotonic() + 90
    while not _answers(env):
        if proc.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            tail = (workdir / "dockerd.log").read_text(errors="replace")[-1500:]
            raise Unavailable(f"dockerd did not start (exit {proc.returncode}): {tail}")
        time.sleep(0.5)
    return engine


def _mirror() -> str:
    """The Debian mirror of this host's apt sources (debootstrap must use the same one)."""
    for src in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = src.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"]:
                url = next((w for w in words[1:] if "://" in w), None)
                if url and "security" not in url:
                    return url
    return DEFAULT_MIRROR


# What Debian's -slim images (the official Python image's base) leave out of every package,
# and their apt hook that drops the package caches after each install.
SLIM_DPKG = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
SLIM_APT = """DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""


def _slim(root: Path) -> None:
    """Make the debootstrap tree look like Debian's slim image (see SLIM_DPKG)."""
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG)
    (root / "etc/apt/apt.conf.d/docker-clean").write_text(SLIM_APT)
    for sub in ("usr/share/man", "usr/share/info", "usr/share/groff", "usr/share/lintian",
                "var/cache/apt", "var/lib/apt/lists"):
        for p in (root / sub).glob("*"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.name != "lock":
                p.unlink()
    for p in (root / "usr/share/locale").glob("*"):
        if p.name != "locale.alias":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for p in (root / "usr/share/doc").glob("*/*"):
        if p.name != "copyright":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def make_stand_in(engine: Engine, name: str, workdir: Path) -> None:
    """debootstrap + docker import under `name`: a stand-in for the official Python image."""
    if not shutil.which("debootstrap"):
        install_packages(["debootstrap"])
    root = workdir / "rootfs"
    proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={STAND_IN_PACKAGES}",
                           "bookworm", str(root), _mirror()], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise Unavailable(f"debootstrap failed: {proc.stdout[-800:]}{proc.stderr[-800:]}")
    # The registry proxy re-signs TLS with this host's extra CA: pip/apt in builds need it.
    extra = Path("/usr/local/share/ca-certificates")
    if extra.is_dir():
        shutil.copytree(extra, root / "usr/local/share/ca-certificates", dirs_exist_ok=True)
        subprocess.run(["chroot", str(root), "update-ca-certificates"], capture_output=True, check=True)
    _slim(root)
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "ENV LANG=C.UTF-8", f"ENV SSL_CERT_FILE={bundle}", f"ENV PIP_CERT={bundle}",
               'CMD ["python3"]']
    argv = ["docker", "import", "--message",
            f"STAND-IN for {name}: debootstrap bookworm minbase, Debian's python 3.11.2 in /usr/bin"]
    for change in changes:
        argv += ["--change", change]
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imp = subprocess.run([*argv, "-", name], env=engine.env, stdin=tar.stdout, capture_output=True,
                         text=True, timeout=600)
    tar.stdout.close()
    tar.wait()
    shutil.rmtree(root, ignore_errors=True)
    if imp.returncode != 0:
        raise Unavailable(f"docker import failed: {imp.stderr.strip()}")


def ensure_base_image(engine: Engine, name: str, workdir: Path) -> str:
    """Make sure image `name` exists: 'present', 'pulled', or 'stand-in' (made here)."""
    if engine.docker("image", "inspect", name, check=False).returncode == 0:
        history = engine.docker("history", "--no-trunc", "--format", "{{.Comment}}", name, check=False)
        return "stand-in" if "STAND-IN" in history.stdout else "present"
    try:
        if engine.docker("pull", name, check=False, timeout=120).returncode == 0:
            return "pulled"
    except subprocess.TimeoutExpired:
        pass
    make_stand_in(engine, name, workdir)
    return "stand-in"


def compose_command(engine: Engine) -> list[str]:
    """Compose v2 (``docker compose``) when the client has it, else docker-compose 1.x."""
    if engine.docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    if not shutil.which("docker-compose"):
        install_packages(["docker-compose"])
    return ["docker-compose"]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "start":
        engine = find_or_start(Path(argv[1]))
        print("\n".join(engine.notes), file=sys.stderr)
        print(f"export DOCKER_HOST={engine.env.get('DOCKER_HOST', '')}")
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        pid = int((Path(argv[1]) / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        while _alive(pid):
            time.sleep(0.2)
        unmount_under(Path(argv[1]))
        return 0
    if len(argv) == 2 and argv[0] == "base-image":
        engine = find_or_start() if "DOCKER_HOST" not in os.environ else Engine(env=dict(os.environ))
        with tempfile.TemporaryDirectory(prefix="rct-base-") as tmp:
            print(ensure_base_image(engine, argv[1], Path(tmp)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
