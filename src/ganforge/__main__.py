from ganforge.cli import app

app(prog_name="ganforge")
