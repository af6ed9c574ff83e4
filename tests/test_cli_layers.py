import subprocess
import sys


def test_layers_table_without_weights_shows_counts_and_branches():
    proc = subprocess.run([sys.executable, "-m", "circuitsviz", "layers", "--model", "inceptionv1", "--no-pretrained"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert rows["mixed4e"][1:3] == ["832", "14x14"]
    assert "1x1:0-255" in rows["mixed4e"] and "pool_reduce:704-831" in rows["mixed4e"]
    assert rows["mixed5b"][1] == "1024"


def test_unknown_model_is_one_clean_error_line():
    proc = subprocess.run([sys.executable, "-m", "circuitsviz", "layers", "--model", "incepton", "--no-pretrained"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown model 'incepton'" in proc.stderr and "inceptionv1" in proc.stderr
    assert "Traceback" not in proc.stderr
