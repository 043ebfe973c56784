from mq.cli.main import run

run()
