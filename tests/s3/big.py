"""PUT a large file and GET it back streaming, for tests/s3.rs
(rss_stays_flat_with_object_size): prints the ETag and the GET's MD5.

python3 big.py ENDPOINT FILE
"""
import hashlib
import sys

import boto3
from botocore.config import Config

endpoint, path = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIAFULL",
                  aws_secret_access_key="secret-full-0001", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                read_timeout=300))
s3.create_bucket(Bucket="large")
with open(path, "rb") as f:
    etag = s3.put_object(Bucket="large", Key="blob", Body=f)["ETag"].strip('"')
h = hashlib.md5()
body = s3.get_object(Bucket="large", Key="blob")["Body"]
for chunk in iter(lambda: body.read(1 << 20), b""):
    h.update(chunk)
print(etag, h.hexdigest())
