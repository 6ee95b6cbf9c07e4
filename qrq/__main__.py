from qrq.cli import main

main(prog_name="qrq")
