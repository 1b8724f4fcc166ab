"""A real SCR Sync server for the binding tests: the `scr-server` binary on
loopback with its embedded SQLite store in a temporary directory, set up
with the same admin commands an operator uses. Shared by the Python tests
and the runner that feeds the Kotlin and Swift tests."""

import json
import os
import re
import subprocess
import tempfile


def nhs_number(n):
    """The n-th valid test-range NHS number (999 000 0000 upwards): never issued."""
    base = 999000000 + n * 7
    while True:
        digits = [int(d) for d in str(base)]
        total = sum(d * w for d, w in zip(digits, range(10, 1, -1)))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return f"{base}{check}"
        base += 1


class Site:
    """The server process and the admin commands against its data directory."""

    def __init__(self, binary, data_dir=None):
        self.binary = binary
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scr-site-")
            data_dir = self._tmp.name
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", data_dir,
             "--listen", "127.0.0.1:0", "--health", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        found = re.search(r"sync on (\S+) and health on (\S+); server key ([0-9a-f]{64})", line)
        if not found:
            self.stop()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.url = f"ws://{found.group(1)}/sync"
        self.server_key = found.group(3)

    OPERATOR = "ops-site"
    OPERATOR_PASSCODE = "ops-site-passcode"

    def admin(self, *args, stdin=""):
        """An admin command as the site's operator runs it: the operator's
        passcode on the first line of standard input, then `stdin`."""
        if not getattr(self, "_operator_added", False):
            self._run_admin(["add-operator", "--operator-id", self.OPERATOR,
                             "--name", "Site Operator"], self.OPERATOR_PASSCODE + "\n")
            self._operator_added = True
        return self._run_admin([*args, "--operator", self.OPERATOR],
                               self.OPERATOR_PASSCODE + "\n" + stdin)

    def _run_admin(self, args, stdin):
        out = subprocess.run(
            [self.binary, "admin", *args, "--data-dir", self.data_dir],
            input=stdin, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"admin {args[0]} failed: {out.stderr.strip()}")
        return out.stdout

    def enroll_token(self, org, device_class):
        out = self.admin("enroll-token", "--org", org, "--class", device_class)
        return re.search(r"enrollment token: (\S+)", out).group(1)

    def patient_token(self, nhs, passcode, org="Y12345"):
        out = self.admin("patient-token", "--org", org, "--nhs", nhs, stdin=passcode + "\n")
        return re.search(r"patient's phone: (\S+)", out).group(1)

    def add_user(self, user_id, name, org, job_role, role_name, activities, card, passcode):
        self.admin("add-user", "--user-id", user_id, "--name", name, "--org", org,
                   "--job-role", job_role, "--role-name", role_name,
                   "--activities", ",".join(activities), "--card-serial", card,
                   stdin=passcode + "\n")

    def assign(self, user_id, nhs, kind):
        self.admin("assign", "--user-id", user_id, "--nhs", nhs, "--kind", kind)

    def load_record(self, nhs, born, sharing="core-and-additional"):
        """A synthetic patient: demographics, an allergy, a medication, a problem."""
        record = {
            "nhs_number": nhs,
            "sharing": sharing,
            "entries": [
                {"content": {"kind": "demographics", "name": "Ada Testpatient",
                             "date_of_birth": born, "address": "1 Example Row, Testtown",
                             "nhs_number": nhs}},
                {"content": {"kind": "allergy",
                             "substance": {"system": "http://snomed.info/sct",
                                           "code": "764146007", "display": "Penicillin"},
                             "reaction": "Urticaria", "severity": "moderate"}},
                {"content": {"kind": "medication",
                             "medicine": {"system": "https://dmd.nhs.uk",
                                          "code": "39113611000001102",
                                          "display": "Metformin 500mg tablets"},
                             "dose": "1 tablet twice daily", "route": "oral",
                             "course": "repeat", "last_issued": "2026-10-02"}},
                {"content": {"kind": "problem",
                             "condition": {"system": "http://snomed.info/sct",
                                           "code": "44054006",
                                           "display": "Type 2 diabetes mellitus"},
                             "onset": "2011", "active": True}},
            ],
        }
        path = os.path.join(self.data_dir, f"load-{nhs[-4:]}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f)
        self.admin("load-record", "--file", path)
        os.remove(path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._tmp is not None:
            self._tmp.cleanup()


NURSE = dict(user_id="555000000102", card="CARD-0001", passcode="jo-2468")
PARAMEDIC = dict(user_id="555000000203", card="CARD-0203", passcode="sam-1357")
BORN = "1948-03-12"


def standard_site(binary):
    """A server with a community nurse (RX1) and a paramedic (RYA), one
    patient on the nurse's caseload and one on nobody's list."""
    s = Site(binary)
    s.add_user(NURSE["user_id"], "Jo Nurse", "RX1", "R0050", "Community Nurse",
               ["B0264", "B0370", "B0380"], NURSE["card"], NURSE["passcode"])
    s.add_user(PARAMEDIC["user_id"], "Sam Paramedic", "RYA", "R1290", "Paramedic",
               ["B0264", "B0370", "B0168", "B0380"], PARAMEDIC["card"], PARAMEDIC["passcode"])
    s.caseload_patient = nhs_number(1)
    s.unlisted_patient = nhs_number(2)
    s.load_record(s.caseload_patient, BORN)
    s.load_record(s.unlisted_patient, BORN)
    s.assign(NURSE["user_id"], s.caseload_patient, "caseload")
    return s
