"""Multipart steps for tests/s3.rs, one per run (the daemon restarts in
between).

python3 mp.py ENDPOINT start BUCKET KEY        -> prints the upload id
python3 mp.py ENDPOINT part BUCKET KEY ID N SIZE SEED -> prints the ETag
python3 mp.py ENDPOINT uploads BUCKET          -> prints the upload ids
python3 mp.py ENDPOINT complete BUCKET KEY ID N:ETAG... -> prints the ETag
"""
import sys

import boto3
import botocore
from botocore.config import Config

endpoint, op = sys.argv[1:3]
a = sys.argv[3:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIAFULL",
                  aws_secret_access_key="secret-full-0001", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
if op == "start":
    try:
        s3.create_bucket(Bucket=a[0])
    except botocore.exceptions.ClientError:
        pass
    print(s3.create_multipart_upload(Bucket=a[0], Key=a[1])["UploadId"])
elif op == "part":
    size, seed = int(a[4]), int(a[5])
    body = bytes((i * 17 + seed) % 253 for i in range(size))
    print(s3.upload_part(Bucket=a[0], Key=a[1], UploadId=a[2], PartNumber=int(a[3]), Body=body)["ETag"])
elif op == "uploads":
    for u in s3.list_multipart_uploads(Bucket=a[0]).get("Uploads", []):
        print(u["UploadId"])
elif op == "complete":
    parts = [{"PartNumber": int(p.split(":", 1)[0]), "ETag": p.split(":", 1)[1]} for p in a[3:]]
    print(s3.complete_multipart_upload(Bucket=a[0], Key=a[1], UploadId=a[2],
                                       MultipartUpload={"Parts": parts})["ETag"])
