from pcseg.cli.main import run

run()
