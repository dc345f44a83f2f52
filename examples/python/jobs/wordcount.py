#!/usr/bin/env python3
"""Example job "py.wordcount": count the lines and words of the job's first input file.

Downloads input 0 of property "inputs", reports progress as it goes, uploads a JSON report as
property "outputs" and finishes with results {"lines": n, "words": m}.
Lines are counted like ``len(text.splitlines())`` on "\\n" (a last line without a newline counts),
words like ``len(text.split())``.
"""

import json
import os
import tempfile

from runyard_job import run


def count(path):
    lines = words = 0
    with open(path, "rb") as f:
        for line in f:  # streams: the input may be larger than memory
            lines += 1
            words += len(line.split())
    return lines, words


def main(job, args):
    with tempfile.TemporaryDirectory(prefix="wordcount-") as workdir:
        source = job.download("inputs", 0, dirpath=workdir)
        job.progress(0.25, f"downloaded input ({os.path.getsize(source)} bytes)")

        lines, words = count(source)
        job.progress(0.5, f"counted {lines} lines and {words} words")
        job.log(f"wordcount: {lines} lines, {words} words")

        report = os.path.join(workdir, "wordcount.json")
        with open(report, "w", encoding="utf-8") as f:
            json.dump({"lines": lines, "words": words}, f)
        job.upload("outputs", report, metadata={"name": "wordcount.json", "mimetype": "application/json"})
        job.progress(1.0, "uploaded outputs[0] (wordcount.json)")

    return {"lines": lines, "words": words}


if __name__ == "__main__":
    run(main)
