"""tools/campaign.py in small: mutated layer files and random binding calls in a child
process, none of which may crash, hang or end in a traceback (the full counts: RESULTS.md)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_small_campaign_passes():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "campaign.py"), "--layer-files=150",
                          "--binding-calls=1500", "--kills=0", "--corruptions=0", "--seed=7"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "layers: 150 cases" in out.stdout and "bindings: 1500 cases" in out.stdout
    assert "campaign: PASS" in out.stdout
