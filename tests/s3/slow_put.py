"""Start a signed PUT of 8 MiB, send 3 MiB of it, say so, and wait: the
test kills the daemon meanwhile (tests/s3.rs, staged_upload_cut_off_*).

python3 slow_put.py ENDPOINT BUCKET KEY
"""
import http.client
import sys
import time
import urllib.parse

import botocore.auth
import botocore.awsrequest
import botocore.credentials

endpoint, bucket, key = sys.argv[1:4]
url = f"{endpoint}/{bucket}/{urllib.parse.quote(key)}"
total = 8 << 20
req = botocore.awsrequest.AWSRequest(method="PUT", url=url, headers={
    "Content-Length": str(total),
    "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
})
creds = botocore.credentials.Credentials("AKIAFULL", "secret-full-0001")
botocore.auth.S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
u = urllib.parse.urlparse(endpoint)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
c.putrequest("PUT", urllib.parse.urlparse(url).path, skip_accept_encoding=True)
for k, v in req.headers.items():
    c.putheader(k, v)
c.endheaders()
chunk = b"s" * (1 << 20)
for _ in range(3):
    c.send(chunk)
print("sent", flush=True)
time.sleep(120)
