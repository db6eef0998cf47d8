import subprocess
import sys


def test_import_mmfuse_stays_light():
    code = ("import sys, mmfuse, mmfuse.encoders, mmfuse.fusion; "
            "mmfuse.encoders.list_encoders(); mmfuse.fusion.list_fusions(); "
            "heavy = [m for m in ('torch', 'onnxruntime', 'matplotlib', 'fastapi', 'cairosvg', "
            "'skimage', 'mlxtend') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
