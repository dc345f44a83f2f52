#!/usr/bin/env python3
"""Example job "py.seed_v1": webda's legacy Python primitives, copied nearly verbatim.

This file deliberately does NOT use runyard_job: it is the compatibility check that a job written
for webda's AsyncJobService (v1 timestamp-only signature, JOB_HOOK + "/status", download answer
with Location and Map.hash, upload with hash + challenge) still runs against runyard.

Kept from the seed on purpose (quirks): a module-level requests call per request (no session, no
timeouts), `metadata={}` default, download_from() returning None when the file already exists,
the redirect download checking the first response's status, the unused `ts` in send_status().
Only change: the `string` type hints (a NameError at import) became `str`.
"""

import hashlib
import hmac
import tempfile
import time
from os import environ, path

import requests


def check_job():
    if (
        environ.get("JOB_ID") is None
        or environ.get("JOB_SECRET_KEY") is None
        or environ.get("JOB_HOOK") is None
    ):
        raise Exception("JOB_ID, JOB_SECRET_KEY and JOB_HOOK are required")


def job_headers():
    ts = str(round(time.time() * 1000))
    return {
        "X-Job-Id": environ.get("JOB_ID"),
        "X-Job-Time": ts,
        "X-Job-Hash": hmac.new(
            bytes(environ.get("JOB_SECRET_KEY"), "latin-1"),
            msg=bytes(ts, "latin-1"),
            digestmod=hashlib.sha256,
        )
        .hexdigest()
        .lower(),
    }


def send_status(data=None):
    """
    Send Job Status
    """
    ts = str(round(time.time() * 1000))
    # https://docs.python.org/3/library/http.client.html
    r = requests.post(
        environ.get("JOB_HOOK") + "/status", json=data, headers=job_headers()
    )
    return r.json()


def download_from(
    store: str, uuid: str, property: str, index: int, dirpath: str
):
    """
    Download a file related to the Job
    """
    # Get the download link from the service
    r = requests.get(
        "{hook}/download/{store}/{uuid}/{property}/{index}".format(
            hook=environ.get("JOB_HOOK"),
            store=store,
            uuid=uuid,
            property=property,
            index=index,
        ),
        headers=job_headers(),
    )
    if r.status_code != 200:
        raise Exception("Cannot download")
    res = r.json()
    filename = path.join(dirpath, res["Map"]["hash"])
    if path.exists(filename):
        print("Already downloaded")
        return
    dwl = requests.get(res["Location"])
    if r.status_code != 200:
        raise Exception("Cannot download from redirect")
    with open(path.join(dirpath, res["Map"]["hash"]), "wb") as f:
        f.write(dwl.content)
    return filename


def upload_to(
    store: str, uuid: str, property: str, filepath: str, metadata={}
):
    """
    Upload a file related to the Job
    """
    file_hash = hashlib.md5()
    challenge = hashlib.md5()
    challenge.update("WEBDA".encode())
    with open(filepath, "rb") as f:
        while chunk := f.read(8192):
            file_hash.update(chunk)
            challenge.update(chunk)
    # Get the upload link from the service
    r = requests.put(
        "{hook}/upload/{store}/{uuid}/{property}".format(
            hook=environ.get("JOB_HOOK"),
            store=store,
            uuid=uuid,
            property=property,
        ),
        json={
            "hash": file_hash.hexdigest(),
            "challenge": challenge.hexdigest(),
            "metadata": metadata,
        },
        headers=job_headers(),
    )
    if r.status_code != 200:
        raise Exception("Upload failed")
    res = r.json()
    # If file is already known to the system
    if res["done"]:
        print("Already uploaded")
        return
    with open(filepath, "rb") as f:
        res = requests.request(res["method"], res["url"], data=f)
        if res.status_code >= 300:
            raise Exception("Upload failed")


def main():
    check_job()
    job_id = environ.get("JOB_ID")
    send_status({"status": "RUNNING"})
    dirpath = tempfile.mkdtemp(prefix="seed-v1-")
    filename = download_from("jobs", job_id, "inputs", 0, dirpath)
    upload_to("jobs", job_id, "outputs", filename)
    send_status({"status": "SUCCESS", "results": {"seed": True}})


if __name__ == "__main__":
    main()
