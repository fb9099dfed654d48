"""One S3 call for tests/s3.rs: put, get (prints the MD5 and size), or
head-missing (prints the error code).

python3 put_get.py ENDPOINT put BUCKET KEY SIZE SEED
python3 put_get.py ENDPOINT get BUCKET KEY
"""
import hashlib
import sys

import boto3
import botocore
from botocore.config import Config

endpoint, op, bucket, key = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIAFULL",
                  aws_secret_access_key="secret-full-0001", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
if op == "put":
    size, seed = int(sys.argv[5]), int(sys.argv[6])
    body = bytes((i * 31 + seed) % 251 for i in range(size))
    try:
        s3.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        pass
    r = s3.put_object(Bucket=bucket, Key=key, Body=body)
    print(r["ETag"].strip('"'), size)
elif op == "get":
    try:
        b = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        print(hashlib.md5(b).hexdigest(), len(b))
    except botocore.exceptions.ClientError as e:
        print(e.response["Error"]["Code"])
