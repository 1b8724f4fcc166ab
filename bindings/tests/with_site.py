"""Runs a command (the Kotlin or Swift tests) against a real server set up
as in `scr_site.standard_site`, telling it where and what through the
environment: SCR_URL, SCR_SERVER_KEY, SCR_CASELOAD_PATIENT,
SCR_UNLISTED_PATIENT, SCR_BORN, SCR_NURSE_TOKEN_1/2, SCR_AMBULANCE_TOKEN and
the users' credentials. usage: with_site.py SERVER_BINARY -- COMMAND..."""

import os
import subprocess
import sys

from scr_site import BORN, NURSE, PARAMEDIC, standard_site


def main():
    binary, sep, *command = sys.argv[1:]
    if sep != "--" or not command:
        sys.exit(__doc__)
    site = standard_site(binary)
    try:
        env = dict(os.environ)
        env.update(
            SCR_URL=site.url,
            SCR_SERVER_KEY=site.server_key,
            SCR_CASELOAD_PATIENT=site.caseload_patient,
            SCR_UNLISTED_PATIENT=site.unlisted_patient,
            SCR_BORN=BORN,
            SCR_NURSE_TOKEN_1=site.enroll_token("RX1", "nurse-tablet"),
            SCR_NURSE_TOKEN_2=site.enroll_token("RX1", "nurse-tablet"),
            SCR_AMBULANCE_TOKEN=site.enroll_token("RYA", "ambulance-tablet"),
            SCR_NURSE_USER=NURSE["user_id"], SCR_NURSE_CARD=NURSE["card"],
            SCR_NURSE_PASSCODE=NURSE["passcode"],
            SCR_PARAMEDIC_USER=PARAMEDIC["user_id"], SCR_PARAMEDIC_CARD=PARAMEDIC["card"],
            SCR_PARAMEDIC_PASSCODE=PARAMEDIC["passcode"],
        )
        sys.exit(subprocess.run(command, env=env, check=False).returncode)
    finally:
        site.stop()


if __name__ == "__main__":
    main()
