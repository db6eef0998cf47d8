"""`mmfuse run --encoders image=tfidf`: an encoder of another modality is a one-line usage
error (TF-IDF on image paths reads the folder names, which can hold the label)."""

from typer.testing import CliRunner

from mmfuse.cli import app

runner = CliRunner()


def _manifest(tmp_path):
    rows = ["path,caption,label"] + [f"{c}/{i}.png,word {i},{c}"
                                     for i in range(12) for c in ("cat", "dog")]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return ["--manifest", str(tmp_path / "m.csv"), "--image", "path", "--text", "caption",
            "--label", "label", "--quiet", "--jobs", "1"]


def test_a_text_encoder_on_the_image_column_is_refused(tmp_path):
    result = runner.invoke(app, ["run", *_manifest(tmp_path), "--encoders", "image=tfidf"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert ("encoder 'tfidf' encodes text, not image: column 'image' takes one of" in message
            and "hog" in message)
    assert "Traceback" not in result.output and "InputError" not in result.output


def test_an_image_encoder_on_the_text_column_is_refused(tmp_path):
    result = runner.invoke(app, ["run", *_manifest(tmp_path), "--encoders", "text=hog"])
    assert result.exit_code == 2, result.output
    assert "encoder 'hog' encodes image, not text" in " ".join(result.output.split())
