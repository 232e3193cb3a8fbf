"""test_package.py: bertd installed like a Debian service. `make deb` builds the packages (remade only
when an input changed), lintian judges them, dpkg installs them on this machine, the init script (and
systemd, where it is PID 1) starts, reloads and stops the service, bertc and the Ruby, Python, C++ and
Erlang libraries from the packages call it, and a purge leaves no file, user or process behind.

It needs root, as CI has: without it, it fails (a skip would count as nothing tested). Whatever
happens, the cleanup stops what the service started and purges the packages.
"""
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import textwrap
import time
import unittest

import harness
from harness import BUILD, ROOT, Server, wait_until

PACKAGES = ["bertd", "ruby-bertd", "python3-bertd", "libbertd-dev"]
MARKER = "# written by tests/integration/test_package.py"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}  # what a service and an operator see


def version():
    with open(os.path.join(ROOT, "debian", "changelog")) as f:
        return re.match(r"\S+ \(([^)]+)\)", f.readline()).group(1)


def run(cmd, timeout=120, check=True, env=ENV, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {r.returncode}:\n{r.stdout}")
    return r


def installed(package):
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return r.returncode == 0 and r.stdout.startswith("ii")


def known_to_dpkg(package):
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return r.returncode == 0 and not r.stdout.startswith("un")


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def service_processes(uid=None):
    """Pids of the installed bertd and of anything running as the bertd user (uid)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{name}/exe")
        except OSError:
            exe = ""
        try:
            st = os.stat(f"/proc/{name}")
        except OSError:
            continue
        if exe.startswith("/usr/sbin/bertd") or (uid is not None and st.st_uid == uid):
            pids.append(int(name))
    return pids


def ids(pid):
    """(real uid, real gid) of a process, from /proc."""
    uid = gid = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


class PackageTest(unittest.TestCase):
    """One install, used by every step in order: installing is the expensive part."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("test_package installs packages with dpkg: run it as root (CI does)")
        cls.version = version()
        cls.deb_dir = os.path.join(BUILD, "deb")
        cls.check_machine_is_free()
        t0 = time.monotonic()
        san = ["SANITIZE=1"] if BUILD.endswith("san") else []
        r = run(["make", "-s", "deb"] + san, cwd=ROOT, timeout=900, check=False, env=dict(os.environ))
        if r.returncode != 0:
            raise AssertionError(f"make deb failed:\n{r.stdout[-6000:]}")
        cls.build_seconds = time.monotonic() - t0
        print(f"\n    (make deb: {cls.build_seconds:.1f}s)", flush=True)
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        cls.debs = [os.path.join(cls.deb_dir, f"{p}_{cls.version}_{'all' if p in ('ruby-bertd', 'python3-bertd') else arch}.deb")
                    for p in PACKAGES]
        cls.changes = os.path.join(cls.deb_dir, f"bertd_{cls.version}_{arch}.changes")

    @classmethod
    def check_machine_is_free(cls):
        """A bertd installed by someone else is never touched; one left by a killed run of this test is purged."""
        if known_to_dpkg("bertd"):
            try:
                ours = MARKER in open("/etc/bertd/bertd.yaml").read()
            except OSError:
                ours = False
            if not ours:
                raise AssertionError("a bertd package is installed on this machine and this test would purge it: "
                                     "remove it first (dpkg --purge " + " ".join(PACKAGES) + ")")
            purge_everything()
        if user_exists("bertd"):
            raise AssertionError("a bertd user exists on this machine although no bertd package is installed; "
                                 "the package's purge would remove it: remove it first (deluser --system bertd)")


def purge_everything():
    """Stops the service's processes and purges the packages; safe to call in any state."""
    if os.path.exists("/etc/init.d/bertd"):
        run(["/etc/init.d/bertd", "stop"], check=False, timeout=60)
    uid = pwd.getpwnam("bertd").pw_uid if user_exists("bertd") else None
    for pid in service_processes(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    present = [p for p in PACKAGES if known_to_dpkg(p)]
    if present:
        run(["dpkg", "--purge"] + present, check=False, timeout=300)


class Package(PackageTest):
    def test_lintian_reports_no_error(self):
        # Lintian takes half a minute: its report is kept beside the packages until they change.
        report = os.path.join(self.deb_dir, "lintian.txt")
        if not os.path.exists(report) or os.path.getmtime(report) < os.path.getmtime(self.changes):
            r = run(["lintian", "--no-tag-display-limit", self.changes], check=False, timeout=300)
            if r.returncode not in (0, 1):
                raise AssertionError(f"lintian could not run ({r.returncode}):\n{r.stdout}")
            with open(report + ".tmp", "w") as f:
                f.write(r.stdout)
            os.rename(report + ".tmp", report)
        text = open(report).read()
        tags = [line for line in text.splitlines() if re.match(r"[EWIPX]: ", line)]
        self.assertEqual([t for t in tags if t.startswith("E: ")], [], text)
        for t in tags:
            print(f"    lintian {t}")

    def test_version_is_written_once(self):
        self.assertEqual(run([os.path.join(BUILD, "bertd"), "-v"]).stdout, f"bertd {self.version}\n")
        for deb in self.debs:
            self.assertEqual(run(["dpkg-deb", "-f", deb, "Version"]).stdout.strip(), self.version)
        out = run(["dpkg-deb", "-c", self.debs[0]]).stdout
        self.assertIn(f"./usr/lib/erlang/lib/bertd-{self.version}/ebin/bertd_native.beam", out)

    def test_unit_security_exposure_is_low(self):
        """systemd-analyze security reads the unit file offline: no running systemd needed."""
        unit = os.path.join(ROOT, "contrib", "systemd", "bertd.service")
        r = run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit], check=False)
        m = re.search(r"Overall exposure level for bertd.service: ([0-9.]+) (\w+)", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        print(f"    (systemd-analyze security: {m.group(1)} {m.group(2)})")
        self.assertLessEqual(float(m.group(1)), 3.0, r.stdout)


class Installed(PackageTest):
    """Installs, serves, reloads, stops and purges; each step asserts what it must leave. The init
    script starts the service here (through `service`, which hands it to systemctl where systemd runs)."""
    manager = "service"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="bertd-pkg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.addCleanup(purge_everything)
        self.epmd = None
        self.addCleanup(self.stop_own_epmd)

    def stop_own_epmd(self):
        if self.epmd:
            run(["epmd", "-kill"], check=False)

    def service(self, action):
        cmd = ["service", "bertd", action] if self.manager == "service" else ["systemctl", action, "bertd"]
        return run(cmd, timeout=60)

    def test_package_installs_serves_reloads_stops_and_purges_without_a_trace(self):
        t0 = time.monotonic()
        before = self.machine_state()
        r = run(["dpkg", "-i"] + self.debs, timeout=300)
        self.assertTrue(all(installed(p) for p in PACKAGES), r.stdout)
        files = self.package_files()
        self.check_layout()
        user = pwd.getpwnam("bertd")
        self.check_user(user)
        if service_processes(user.pw_uid):
            # Started by the package's postinst (no policy-rc.d denied it): the shipped config serves.
            self.assertEqual(self.admin_stats(8000)["generation"], "1")
            self.service("stop")
        self.assertEqual(run(["bertd", "-t", "-c", "/etc/bertd/bertd.yaml"]).returncode, 0)
        port = harness.free_port()
        self.write_config(port, count=1)
        self.ensure_epmd()
        self.service("start")
        self.serve_and_check(port, user)
        self.reload_and_check(port, user)
        self.rotate_and_check(port)
        self.verify_unit()
        self.service("stop")
        wait_until(lambda: not service_processes(user.pw_uid), timeout=15, what="every bertd process to stop")
        self.assertFalse(os.path.exists("/run/bertd/bertd.pid"))
        run(["dpkg", "--purge"] + PACKAGES, timeout=300)
        self.check_nothing_left(files, before, user)
        print(f"\n    (install to purge: {time.monotonic() - t0:.1f}s)", flush=True)

    # -- steps ---------------------------------------------------------------------------------
    def check_layout(self):
        v = self.version
        for path in ("/usr/sbin/bertd", "/usr/bin/bertc", "/etc/bertd/bertd.yaml", "/etc/init.d/bertd",
                     "/etc/default/bertd", "/etc/logrotate.d/bertd", "/lib/systemd/system/bertd.service",
                     f"/usr/lib/erlang/lib/bertd-{v}/ebin/bertd_native.beam",
                     f"/usr/lib/erlang/lib/bertd-{v}/ebin/bertd_client.beam",
                     f"/usr/lib/erlang/lib/bertd-{v}/ebin/bertd.app",
                     "/usr/lib/ruby/vendor_ruby/ernie.rb", "/usr/lib/python3/dist-packages/bertd/client.py",
                     "/usr/include/bertd/bertd/handler.h"):
            self.assertTrue(os.path.exists(path), path)
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "bertd"]).stdout
        for path in ("/etc/bertd/bertd.yaml", "/etc/init.d/bertd", "/etc/default/bertd", "/etc/logrotate.d/bertd"):
            self.assertIn(path, conffiles)
        self.assertEqual(run(["bertd", "-v"]).stdout, f"bertd {v}\n")
        for page in ("bertd", "bertc", "bertd.yaml"):
            self.assertIn("/usr/share/man/", run(["man", "-w", page]).stdout)
        self.assertEqual(run(["pkg-config", "--modversion", "bertd"]).stdout.strip(), v)
        # Erlang finds the application in its own lib directory, with no -pa.
        r = run(["erl", "-noshell", "-eval", "io:format(\"~s\", [code:lib_dir(bertd)]), halt()."])
        self.assertEqual(r.stdout.strip(), f"/usr/lib/erlang/lib/bertd-{v}")

    def check_user(self, user):
        self.assertLess(user.pw_uid, 1000, "a system user")
        self.assertEqual(user.pw_dir, "/var/lib/bertd")
        self.assertIn(user.pw_shell, ("/usr/sbin/nologin", "/bin/false"))
        self.assertEqual(grp.getgrgid(user.pw_gid).gr_name, "bertd")
        st = os.stat("/var/lib/bertd")
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (user.pw_uid, 0o750))

    def write_config(self, port, count, cpp=None):
        """The shipped config plus a port, a Python and a C++ handler from the packages, and bertd_echo."""
        # In bertd's home: the unit's PrivateTmp hides the test's /tmp from the service. Purged with it.
        os.makedirs("/var/lib/bertd/pkgtest", exist_ok=True)
        with open("/var/lib/bertd/pkgtest/calc.py", "w") as f:
            f.write("import sys\nimport bertd\n\n"
                    "def add(a, b):\n    return a + b\n\n"
                    "bertd.expose('calc', sys.modules[__name__])\n")
        if not hasattr(self, "shipped"):
            self.shipped = open("/etc/bertd/bertd.yaml").read()
        shipped = self.shipped
        text = MARKER + "\n" + shipped.replace("port: 8000", f"port: {port}").replace("modules: []", "modules:")
        text += f"""
  - name: calc
    command: /usr/bin/python3 /var/lib/bertd/pkgtest/calc.py
    count: {count}
  - name: bertd_echo
    type: native
    codepaths: [/usr/lib/erlang/lib/bertd-{self.version}/ebin]
erlang:
  name: pkgtest{os.getpid()}@127.0.0.1
"""
        if cpp:
            text = text.replace("\nerlang:", f"\n  - name: cpp\n    command: {cpp}\nerlang:")
        with open("/etc/bertd/bertd.yaml", "w") as f:
            f.write(text)

    def serve_and_check(self, port, user):
        pid = int(open("/run/bertd/bertd.pid").read())
        self.assertEqual(ids(pid), (0, 0), "the master keeps root (bind, logs, pidfile, config)")
        bertc = ["bertc", "-p", str(port)]
        wait_until(lambda: run(bertc + ["call", "calc", "add", "1", "2"], check=False).stdout.strip() == "3",
                   timeout=20, interval=0.2, what="the Python module to answer")
        wait_until(lambda: run(bertc + ["call", "bertd_echo", "echo", "{a,1}"], check=False).stdout.strip() == "{a,1}",
                   timeout=30, interval=0.2, what="the native module (bertd_native from the package) to answer")
        self.check_children(pid, user, at_least=6)  # 2+ acceptors, a calc worker, the link, the VM
        st = os.stat("/var/lib/bertd/.erlang.cookie")
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (user.pw_uid, 0o400), "the cookie is bertd's")
        # The Ruby library from ruby-bertd, with no -I.
        r = run(["ruby", "-e", f'require "bertd/client"; p BERTD::Service.new("127.0.0.1", {port}).call.calc.add(2, 3)'])
        self.assertEqual(r.stdout.strip(), "5")

    def compile_cpp_handler(self):
        """A C++ handler built against libbertd-dev alone: its headers, its library, its bertd.pc."""
        src = "/var/lib/bertd/pkgtest/mul.cc"
        with open(src, "w") as f:
            f.write("#include <bertd/handler.h>\n"
                    "int main() {\n"
                    "    bertd::Handler h;\n"
                    "    h.expose(\"cpp\", \"mul\", 2,\n"
                    "             [](bertd::Args a) { return bert::Term(a[0].as_int() * a[1].as_int()); });\n"
                    "    return h.run();\n"
                    "}\n")
        flags = run(["pkg-config", "--cflags", "--libs", "bertd"]).stdout.split()
        run(["g++", "-O0", src, "-o", "/var/lib/bertd/pkgtest/mul"] + flags, cwd="/", timeout=120)
        return "/var/lib/bertd/pkgtest/mul"

    def reload_and_check(self, port, user):
        """Generation 2: two calc workers and a C++ module; it runs as bertd too."""
        self.write_config(port, count=2, cpp=self.compile_cpp_handler())
        self.service("reload")
        wait_until(lambda: self.admin_stats(port).get("generation") == "2", timeout=20, what="generation 2")
        wait_until(lambda: self.admin_stats(port).get("workers.idle.calc") == "2", timeout=20,
                   what="two calc workers in generation 2")
        bertc = ["bertc", "-p", str(port)]
        self.assertEqual(run(bertc + ["call", "calc", "add", "20", "22"]).stdout.strip(), "42")
        self.assertEqual(run(bertc + ["call", "cpp", "mul", "6", "7"]).stdout.strip(), "42")
        self.check_children(int(open("/run/bertd/bertd.pid").read()), user, at_least=7)

    def rotate_and_check(self, port):
        """logrotate's config moves the access log and signals the master through /run/bertd/bertd.pid."""
        log = "/var/log/bertd/access.log"
        wait_until(lambda: os.path.exists(log) and os.path.getsize(log) > 0, what="access log lines")
        state = os.path.join(self.tmp, "logrotate.state")
        run(["logrotate", "-f", "-s", state, "/etc/logrotate.d/bertd"])
        self.assertTrue(os.path.exists(log + ".1"))
        run(["bertc", "-p", str(port), "call", "calc", "add", "1", "1"])
        wait_until(lambda: os.path.exists(log) and os.path.getsize(log) > 0, what="a new access log")

    def verify_unit(self):
        r = run(["systemd-analyze", "verify", "--man=no", "/lib/systemd/system/bertd.service"], check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("bertd.service", r.stdout, r.stdout)

    # -- the machine before and after ----------------------------------------------------------
    def machine_state(self):
        return {"users": {p.pw_name for p in pwd.getpwall()}, "groups": {g.gr_name for g in grp.getgrall()},
                "rc": sorted(f for d in os.listdir("/etc") if d.startswith("rc") for f in
                             (os.listdir(os.path.join("/etc", d)) if os.path.isdir(os.path.join("/etc", d)) else [])
                             if "bertd" in f)}

    def package_files(self):
        files = []
        for p in PACKAGES:
            files += run(["dpkg-query", "-L", p]).stdout.split()
        return [f for f in files if not os.path.isdir(f) or f.startswith(("/etc/bertd", "/usr/lib/erlang/lib/bertd",
                                                                         "/usr/include/bertd", "/usr/share/doc/"))]

    def check_nothing_left(self, files, before, user):
        for p in PACKAGES:
            self.assertFalse(known_to_dpkg(p), p)
        left = [f for f in files if os.path.lexists(f)]
        self.assertEqual(left, [], "files of the packages remain")
        for path in ("/etc/bertd", "/var/log/bertd", "/var/lib/bertd", "/run/bertd",
                     "/usr/lib/python3/dist-packages/bertd", "/etc/systemd/system/multi-user.target.wants/bertd.service",
                     "/var/lib/systemd/deb-systemd-helper-enabled/bertd.service.dsh-also"):
            self.assertFalse(os.path.lexists(path), path)
        after = self.machine_state()
        self.assertEqual(after, before, "users, groups and rc links as before the install")
        self.assertFalse(user_exists("bertd"))
        self.assertFalse(group_exists("bertd"))
        self.assertEqual(service_processes(user.pw_uid), [], "no process of the service remains")

    # -- helpers -------------------------------------------------------------------------------
    def check_children(self, master, user, at_least):
        """Every process below the master (the VM's too) runs as bertd."""
        below, todo = [], [master]
        while todo:
            out = run(["pgrep", "-P", str(todo.pop())], check=False).stdout.split()
            below += [int(p) for p in out]
            todo += [int(p) for p in out]
        self.assertGreaterEqual(len(below), at_least, below)
        for pid in below:
            try:
                self.assertEqual(ids(pid), (user.pw_uid, user.pw_gid), open(f"/proc/{pid}/cmdline").read())
            except FileNotFoundError:
                pass  # a shell that has exec'd or exited meanwhile

    def admin_stats(self, port):
        r = run(["bertd", "stats", "-p", str(port)], check=False)
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def ensure_epmd(self):
        """The companion VM registers with epmd; one started here (as root) goes at the end."""
        if run(["epmd", "-names"], check=False).returncode != 0:
            run(["epmd", "-daemon"])
            self.epmd = True


class Systemd(Installed):
    """The same steps with systemctl, where systemd is PID 1 (not in this project's containers)."""
    manager = "systemctl"

    def setUp(self):
        if not os.path.isdir("/run/systemd/system"):
            init = open("/proc/1/comm").read().strip()
            self.skipTest(f"PID 1 is {init}, not systemd: here the unit is checked by systemd-analyze only")
        super().setUp()


class Privileges(unittest.TestCase):
    """The nginx way: the master stays root, every child runs as the configured user. Users made
    here with useradd --system are removed at the end; uids and gids are read from /proc."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("the privilege tests create users and start bertd as root: run them as root")
        tag = f"bt{os.getpid() % 100000}"
        cls.base = tempfile.mkdtemp(prefix="bertd-priv-")
        os.chmod(cls.base, 0o755)
        cls.extra = tag + "x"  # a supplementary group of user a
        cls.addClassCleanup(shutil.rmtree, cls.base, True)
        cls.addClassCleanup(cls.remove_users, tag)
        run(["groupadd", "--system", cls.extra])
        cls.users = {}
        for who in ("a", "b"):
            name, home = tag + who, os.path.join(cls.base, "home-" + who)
            extra = ["-G", cls.extra] if who == "a" else []
            run(["useradd", "--system", "--user-group", "--create-home", "--home-dir", home,
                 "--shell", "/usr/sbin/nologin"] + extra + [name])
            cls.users[who] = pwd.getpwnam(name)

    @classmethod
    def remove_users(cls, tag):
        for who in ("a", "b"):
            name = tag + who
            if user_exists(name):
                for pid in service_processes(pwd.getpwnam(name).pw_uid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                run(["userdel", name], check=False)
            if group_exists(name):
                run(["groupdel", name], check=False)
        if group_exists(tag + "x"):
            run(["groupdel", tag + "x"], check=False)

    def server(self, config, args=()):
        s = Server(config, args=list(args))
        os.chmod(s.dir, 0o755)  # the children, no longer root, open the access log there
        self.addCleanup(s.stop)
        return s.start()

    def config(self, extra="", echo_user=""):
        echo = os.path.join(BUILD, "tests", "handlers", "echo")
        own = f"\n                user: {echo_user}" if echo_user else ""
        return f"""
            listen: 127.0.0.1
            acceptors: 2
            access_log: access.log
            {extra}
            modules:
              - name: echo
                command: {echo}
                count: 2
              - name: own
                command: {echo} own
                count: 1{own}
            """

    def assert_runs_as(self, pid, user, groups=None):
        status = open(f"/proc/{pid}/status").read()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M).groups()
        gids = re.search(r"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M).groups()
        what = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        self.assertEqual(set(uids), {str(user.pw_uid)}, f"{what}: real, effective, saved and fs uid")
        self.assertEqual(set(gids), {str(user.pw_gid)}, f"{what}: real, effective, saved and fs gid")
        listed = set(re.search(r"^Groups:(.*)$", status, re.M).group(1).split())
        if groups is not None:
            self.assertEqual(listed, {str(g) for g in groups}, f"{what}: supplementary groups")
        if user.pw_uid and not os.readlink(f"/proc/{pid}/exe").startswith(BUILD):
            # A program a worker runs gets the user's HOME (acceptors never exec: /proc shows the master's).
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            self.assertIn(b"HOME=" + user.pw_dir.encode(), env, what)

    def children_by_kind(self, server):
        acceptors = set(server.acceptor_pids())
        return acceptors, [p for p in server.children() if p not in acceptors]

    def test_children_run_as_user_with_its_groups_while_the_master_stays_root(self):
        a, b = self.users["a"], self.users["b"]
        server = self.server(self.config(f"user: {a.pw_name}", echo_user=b.pw_name))
        self.assertEqual(server.service().call.echo.echo(7), 7)
        self.assertEqual(server.service().call.own.echo(8), 8)
        self.assertEqual(ids(server.proc.pid), (0, 0), "the master keeps root")
        acceptors, workers = self.children_by_kind(server)
        self.assertEqual(len(acceptors), 2)
        extra = grp.getgrnam(self.extra).gr_gid
        for pid in acceptors:
            self.assert_runs_as(pid, a, groups={a.pw_gid, extra})
        as_a = [p for p in workers if ids(p)[0] == a.pw_uid]
        as_b = [p for p in workers if ids(p)[0] == b.pw_uid]
        self.assertEqual((len(as_a), len(as_b)), (2, 1), "echo's workers as the config's user, own's as its own")
        for pid in as_a:
            self.assert_runs_as(pid, a, groups={a.pw_gid, extra})
        for pid in as_b:
            self.assert_runs_as(pid, b, groups={b.pw_gid})
        self.assertEqual(os.stat(os.path.join(server.dir, "access.log")).st_uid, a.pw_uid,
                         "the master gives the access log to the acceptors' user")
        self.assertNotIn("running as root with no user", server.log())

    def test_reloaded_generation_runs_as_the_reloaded_user(self):
        a, b = self.users["a"], self.users["b"]
        server = self.server(self.config(f"user: {a.pw_name}"))
        old = set(server.children())
        with open(server.config_path, "w") as f:
            f.write(textwrap.dedent(self.config(f"user: {b.pw_name}")))
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(lambda: server.stats().get("generation") == "2", what="generation 2")
        wait_until(lambda: not (set(server.children()) & old), timeout=15, what="generation 1's children to go")
        wait_until(lambda: len(server.children()) == 5, what="generation 2's children")
        for pid in server.children():
            self.assertEqual(ids(pid), (b.pw_uid, b.pw_gid))
        self.assertEqual(server.service().call.echo.echo(9), 9)

    def test_dash_u_overrides_the_config_and_root_without_user_warns(self):
        a = self.users["a"]
        server = self.server(self.config())
        self.assertIn("running as root with no user", server.log())
        self.assertIn("set 'user: NAME'", server.log())
        for pid in server.children():
            self.assertEqual(ids(pid)[0], 0, "Ernie's behaviour: children run as the invoking user")
        server.stop()
        server = self.server(self.config("user: nobody"), args=["-u", a.pw_name])
        for pid in server.children():
            self.assertEqual(ids(pid), (a.pw_uid, a.pw_gid))

    def test_unknown_user_or_group_is_refused_with_file_and_line(self):
        cfg = os.path.join(self.base, "bad.yaml")
        with open(cfg, "w") as f:
            f.write("listen: 127.0.0.1\nuser: nosuchuserbertd\nmodules: []\n")
        r = run([os.path.join(BUILD, "bertd"), "-t", "-c", cfg], check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(f"{cfg}:2", r.stdout)
        self.assertIn("no user 'nosuchuserbertd'", r.stdout)
        with open(cfg, "w") as f:
            f.write(f"listen: 127.0.0.1\nuser: {self.users['a'].pw_name}\ngroup: nosuchgroupbertd\nmodules: []\n")
        r = run([os.path.join(BUILD, "bertd"), "-t", "-c", cfg], check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("no group 'nosuchgroupbertd'", r.stdout)

    def test_erlang_link_and_companion_vm_run_as_user_with_its_cookie(self):
        a = self.users["a"]
        if run(["epmd", "-names"], check=False).returncode != 0:
            run(["epmd", "-daemon"])  # as root: a VM of user a would otherwise start one as a
            self.addCleanup(run, ["epmd", "-kill"], check=False)
        ebin = os.path.join(BUILD, "ebin")
        server = self.server(self.config(f"user: {a.pw_name}\n            erlang:\n              name: "
                                         f"pkgpriv{os.getpid()}@127.0.0.1").replace(
            "modules:\n", f"modules:\n              - name: bertd_echo\n                type: native\n"
                          f"                codepaths: [{ebin}]\n", 1))
        wait_until(lambda: self.native_echo(server), timeout=30, interval=0.2, what="the native module")
        link = [p for p in server.children() if open(f"/proc/{p}/comm").read().strip() == "bertd-link"]
        vm = [p for p in service_processes(a.pw_uid) if "beam" in open(f"/proc/{p}/comm").read()]
        self.assertEqual(len(link), 1)
        self.assertEqual(len(vm), 1, "the companion VM")
        for pid in link + vm:
            self.assertEqual(ids(pid), (a.pw_uid, a.pw_gid))
        cookie = os.path.join(a.pw_dir, ".erlang.cookie")
        st = os.stat(cookie)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (a.pw_uid, 0o400), "the cookie is the user's own")

    def native_echo(self, server):
        try:
            return server.service(timeout=3).call.bertd_echo.echo(5) == 5
        except Exception:
            return False


class Notify(unittest.TestCase):
    """Type=notify without systemd: the test binds the NOTIFY_SOCKET a unit would get and reads
    what a real bertd sends there, with the sender's pid (SCM_CREDENTIALS) as systemd checks it."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="bertd-notify-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(15)

    def message(self):
        """(fields, sender pid) of the next datagram."""
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        return fields, pid

    def start(self, config):
        server = Server(config)
        os.environ["NOTIFY_SOCKET"] = self.path
        try:
            server.start()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        self.addCleanup(server.stop)
        return server

    def test_master_tells_ready_reloading_and_stopping_with_a_status_line(self):
        config = """
            listen: 127.0.0.1
            acceptors: 1
            modules:
              - name: echo
                command: {echo}
                count: 2
            """
        echo = os.path.join(BUILD, "tests", "handlers", "echo")
        server = self.start(config.format(echo=echo))
        master = server.proc.pid
        fields, pid = self.message()
        self.assertEqual(pid, master, "only the master speaks to systemd")
        self.assertEqual(fields.get("READY"), "1", fields)
        self.assertIn("generation 1 serves", fields["STATUS"])
        self.assertIn(f"127.0.0.1:{server.port}", fields["STATUS"])
        # A program a child runs never gets the socket (acceptors, forked without exec, only
        # unset it: /proc shows their environment as it was at the master's exec).
        workers = [p for p in server.children() if p not in server.acceptor_pids()]
        self.assertTrue(workers)
        for child in workers:
            with open(f"/proc/{child}/environ", "rb") as f:
                self.assertNotIn(b"NOTIFY_SOCKET=", f.read(), "children never inherit the socket")

        with open(server.config_path, "w") as f:
            f.write(textwrap.dedent(config.format(echo=echo)).replace("count: 2", "count: 3"))
        os.kill(master, signal.SIGHUP)
        fields, pid = self.message()
        self.assertEqual((fields.get("RELOADING"), pid), ("1", master), fields)
        self.assertGreater(int(fields["MONOTONIC_USEC"]), 0)
        fields, pid = self.message()
        self.assertEqual((fields.get("READY"), pid), ("1", master), fields)
        self.assertIn("generation 2 serves", fields["STATUS"])

        with open(server.config_path, "w") as f:
            f.write("modules: [\n")
        os.kill(master, signal.SIGHUP)
        self.assertEqual(self.message()[0].get("RELOADING"), "1")
        fields, _ = self.message()
        self.assertEqual(fields.get("READY"), "1", "a refused reload still ends the reload")
        self.assertIn("reload refused", fields["STATUS"])
        self.assertIn("generation 2 serves", fields["STATUS"])

        os.kill(master, signal.SIGQUIT)
        fields, pid = self.message()
        self.assertEqual((fields.get("STOPPING"), pid), ("1", master), fields)
        server.proc.wait(15)


if __name__ == "__main__":
    unittest.main()
