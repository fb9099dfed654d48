"""Every S3 operation shardfs serves, through boto3, against a real mount
and endpoint, and both doors (the mount and S3) on the same objects.

Run by tests/s3.rs: python3 ops.py ENDPOINT MOUNTPOINT. Each check raises
on failure; the last line is 'N passed, 0 failed'.
"""
import datetime
import hashlib
import os
import sys
import time

import boto3
import botocore
from botocore.config import Config

ENDPOINT, MNT = sys.argv[1], sys.argv[2]
passed = 0


def client(access="AKIAFULL", secret="secret-full-0001", **kw):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **kw),
    )


s3 = client()


def ok(name, cond, detail=""):
    global passed
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    passed += 1
    print(f"ok {name}")


def err(name, code, status, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"].get("Code")
        st = e.response["ResponseMetadata"]["HTTPStatusCode"]
        ok(name, got == code and st == status, f"wanted {code} {status}, got {got} {st}: {e.response['Error']}")
        return e
    raise AssertionError(f"{name}: no error, wanted {code}")


def md5(b):
    return '"' + hashlib.md5(b).hexdigest() + '"'


def pattern(n, seed):
    out = bytearray()
    x = seed
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out += x.to_bytes(8, "little")
    return bytes(out[:n])


# ---- buckets ---------------------------------------------------------------
s3.create_bucket(Bucket="alpha")
s3.create_bucket(Bucket="beta")
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
ok("list_buckets", names == ["alpha", "beta"], names)
ok("create_bucket is a directory of the mount", os.path.isdir(f"{MNT}/alpha"))
ok("staging directory hidden from the mount", sorted(os.listdir(MNT)) == ["alpha", "beta"], os.listdir(MNT))
err("create_bucket twice", "BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket="alpha")
err("invalid bucket name (short)", "InvalidBucketName", 400, s3.create_bucket, Bucket="ab")
err("invalid bucket name (upper case)", "InvalidBucketName", 400, s3.create_bucket, Bucket="Bad_Bucket")
ok("head_bucket", s3.head_bucket(Bucket="alpha")["ResponseMetadata"]["HTTPStatusCode"] == 200)
err("head_bucket missing", "404", 404, s3.head_bucket, Bucket="missing-bucket")
loc = s3.get_bucket_location(Bucket="alpha")
ok("get_bucket_location", loc.get("LocationConstraint") in (None, ""), loc)
err("get_bucket_location missing", "NoSuchBucket", 404, s3.get_bucket_location, Bucket="missing-bucket")
os.mkdir(f"{MNT}/fuse-made")
ok("bucket made through the mount is listed", "fuse-made" in [b["Name"] for b in s3.list_buckets()["Buckets"]])

# ---- put / get / head --------------------------------------------------------
body = b"hello, shardfs"
r = s3.put_object(Bucket="alpha", Key="docs/hello.txt", Body=body, ContentType="text/plain",
                  Metadata={"color": "blue", "Owner": "ops"}, CacheControl="max-age=60",
                  ContentDisposition="attachment", ContentEncoding="identity", ContentLanguage="en")
ok("put_object ETag is the MD5", r["ETag"] == md5(body), r["ETag"])
g = s3.get_object(Bucket="alpha", Key="docs/hello.txt")
ok("get_object body", g["Body"].read() == body)
ok("get_object ETag", g["ETag"] == md5(body))
ok("get_object content type", g["ContentType"] == "text/plain", g["ContentType"])
ok("get_object metadata", g["Metadata"] == {"color": "blue", "owner": "ops"}, g["Metadata"])
ok("get_object content headers", (g["CacheControl"], g["ContentDisposition"], g["ContentEncoding"], g["ContentLanguage"]) == ("max-age=60", "attachment", "identity", "en"))
h = s3.head_object(Bucket="alpha", Key="docs/hello.txt")
ok("head_object", h["ContentLength"] == len(body) and h["ETag"] == md5(body) and h["Metadata"]["color"] == "blue", h)
ok("PUT via S3 reads back through the mount", open(f"{MNT}/alpha/docs/hello.txt", "rb").read() == body)
ok("metadata is a user.s3.meta.* xattr", os.getxattr(f"{MNT}/alpha/docs/hello.txt", "user.s3.meta.color") == b"blue")
ok("content type is the user.s3.content-type xattr", os.getxattr(f"{MNT}/alpha/docs/hello.txt", "user.s3.content-type") == b"text/plain")
ok("ETag record is no xattr of the file", all(not x.startswith("shardfs") for x in os.listxattr(f"{MNT}/alpha/docs/hello.txt")), os.listxattr(f"{MNT}/alpha/docs/hello.txt"))
g = s3.get_object(Bucket="alpha", Key="docs/hello.txt", ResponseContentType="application/x-test")
ok("response-content-type override", g["ContentType"] == "application/x-test")
plain = s3.put_object(Bucket="alpha", Key="plain", Body=b"")
ok("empty object", s3.get_object(Bucket="alpha", Key="plain")["Body"].read() == b"" and plain["ETag"] == md5(b""))
ok("default content type", s3.head_object(Bucket="alpha", Key="plain")["ContentType"] == "binary/octet-stream")

err("get missing key", "NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="nope")
err("get missing bucket", "NoSuchBucket", 404, s3.get_object, Bucket="missing-bucket", Key="x")
err("put missing bucket", "NoSuchBucket", 404, s3.put_object, Bucket="missing-bucket", Key="x", Body=b"1")
err("head missing key", "404", 404, s3.head_object, Bucket="alpha", Key="nope")
err("key over 1024 bytes", "KeyTooLongError", 400, s3.put_object, Bucket="alpha", Key="k" * 1025, Body=b"1")
err("key part over 255 bytes", "KeyTooLongError", 400, s3.put_object, Bucket="alpha", Key="d/" + "k" * 256, Body=b"1")
err("key with an empty part", "InvalidArgument", 400, s3.put_object, Bucket="alpha", Key="a//b", Body=b"1")
err("key with a .. part", "InvalidArgument", 400, s3.put_object, Bucket="alpha", Key="a/../b", Body=b"1")
err("bad Content-MD5", "BadDigest", 400, s3.put_object, Bucket="alpha", Key="digest", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
err("bad Content-MD5 stores nothing", "NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="digest")
err("user metadata over 2 KiB", "MetadataTooLarge", 400, s3.put_object, Bucket="alpha", Key="meta-big", Body=b"1", Metadata={"big": "v" * 2100})
err("If-None-Match: * on an existing key", "PreconditionFailed", 412, s3.put_object, Bucket="alpha", Key="plain", Body=b"new", IfNoneMatch="*")
ok("If-None-Match: * refused PUT left the object", s3.get_object(Bucket="alpha", Key="plain")["Body"].read() == b"")
s3.put_object(Bucket="alpha", Key="fresh", Body=b"first", IfNoneMatch="*")
ok("If-None-Match: * on a new key", s3.get_object(Bucket="alpha", Key="fresh")["Body"].read() == b"first")

# a large object: streamed in and out, range in the middle
big = pattern(9 * 1024 * 1024 + 123, 7)
r = s3.put_object(Bucket="alpha", Key="big/blob.bin", Body=big)
ok("large put ETag", r["ETag"] == md5(big))
ok("large get", s3.get_object(Bucket="alpha", Key="big/blob.bin")["Body"].read() == big)
ok("large object through the mount", open(f"{MNT}/alpha/big/blob.bin", "rb").read() == big)

# ---- ranges -----------------------------------------------------------------
def rng(spec):
    return s3.get_object(Bucket="alpha", Key="big/blob.bin", Range=spec)

r = rng("bytes=5000000-5000099")
ok("range body", r["Body"].read() == big[5000000:5000100])
ok("range status and Content-Range", r["ResponseMetadata"]["HTTPStatusCode"] == 206 and r["ContentRange"] == f"bytes 5000000-5000099/{len(big)}", r["ContentRange"])
ok("suffix range", rng("bytes=-10")["Body"].read() == big[-10:])
ok("open range", rng(f"bytes={len(big) - 7}-")["Body"].read() == big[-7:])
err("unsatisfiable range", "InvalidRange", 416, s3.get_object, Bucket="alpha", Key="plain", Range="bytes=10-20")

# ---- conditions ---------------------------------------------------------------
etag = md5(body)
past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
G = lambda **kw: s3.get_object(Bucket="alpha", Key="docs/hello.txt", **kw)
ok("If-Match match", G(IfMatch=etag)["Body"].read() == body)
err("If-Match mismatch", "PreconditionFailed", 412, G, IfMatch='"0123"')
err("If-None-Match match", "304", 304, G, IfNoneMatch=etag)
ok("If-None-Match mismatch", G(IfNoneMatch='"0123"')["Body"].read() == body)
err("If-Modified-Since future", "304", 304, G, IfModifiedSince=future)
ok("If-Modified-Since past", G(IfModifiedSince=past)["Body"].read() == body)
err("If-Unmodified-Since past", "PreconditionFailed", 412, G, IfUnmodifiedSince=past)
ok("If-Unmodified-Since future", G(IfUnmodifiedSince=future)["Body"].read() == body)
ok("If-Match wins over If-Unmodified-Since", G(IfMatch=etag, IfUnmodifiedSince=past)["Body"].read() == body)
err("If-None-Match wins over If-Modified-Since", "304", 304, G, IfNoneMatch=etag, IfModifiedSince=past)
err("HEAD If-None-Match", "304", 304, s3.head_object, Bucket="alpha", Key="docs/hello.txt", IfNoneMatch=etag)
err("HEAD If-Match", "412", 412, s3.head_object, Bucket="alpha", Key="docs/hello.txt", IfMatch='"0123"')

# ---- both doors ----------------------------------------------------------------
with open(f"{MNT}/alpha/docs/from-fuse.txt", "wb") as f:
    f.write(b"written through the mount\n")
g = s3.get_object(Bucket="alpha", Key="docs/from-fuse.txt")
ok("FUSE write, S3 GET", g["Body"].read() == b"written through the mount\n")
ok("FUSE write, S3 ETag is its MD5", g["ETag"] == md5(b"written through the mount\n"), g["ETag"])
with open(f"{MNT}/alpha/docs/hello.txt", "ab") as f:
    f.write(b" and more")
h = s3.head_object(Bucket="alpha", Key="docs/hello.txt")
ok("FUSE append recomputes the ETag", h["ETag"] == md5(body + b" and more") and h["ContentLength"] == len(body) + 9, h["ETag"])
os.truncate(f"{MNT}/alpha/docs/hello.txt", 5)
ok("FUSE truncate recomputes the ETag", s3.head_object(Bucket="alpha", Key="docs/hello.txt")["ETag"] == md5(body[:5]))
with open(f"{MNT}/alpha/docs/hello.txt", "r+b") as f:
    f.write(b"J")  # same size, new bytes
ok("FUSE overwrite in place recomputes the ETag", s3.get_object(Bucket="alpha", Key="docs/hello.txt")["ETag"] == md5(b"J" + body[1:5]))
# the kernel's caches: stat through the mount, replace over S3, stat at once
for i in range(5):
    p = f"{MNT}/alpha/cached"
    s3.put_object(Bucket="alpha", Key="cached", Body=b"v" * (i + 1))
    st = os.stat(p)
    data = open(p, "rb").read()
    ok(f"mount sees S3 replacement {i} at once", st.st_size == i + 1 and data == b"v" * (i + 1), (st.st_size, data))
s3.delete_object(Bucket="alpha", Key="cached")
ok("mount sees S3 delete at once", not os.path.exists(f"{MNT}/alpha/cached"))
# reader through the mount keeps its object while S3 replaces it
s3.put_object(Bucket="alpha", Key="held", Body=b"old contents")
with open(f"{MNT}/alpha/held", "rb") as f:
    s3.put_object(Bucket="alpha", Key="held", Body=b"new")
    ok("open FUSE reader keeps the old object", f.read() == b"old contents")
ok("next open sees the new object", open(f"{MNT}/alpha/held", "rb").read() == b"new")

# ---- implicit and explicit directories ------------------------------------------
s3.put_object(Bucket="alpha", Key="deep/er/still/obj", Body=b"1")
ok("implicit directories exist in the mount", os.path.isdir(f"{MNT}/alpha/deep/er/still"))
s3.delete_object(Bucket="alpha", Key="deep/er/still/obj")
ok("implicit directories vanish when S3 empties them", not os.path.exists(f"{MNT}/alpha/deep"))
os.makedirs(f"{MNT}/alpha/made/by/mkdir")
s3.put_object(Bucket="alpha", Key="made/by/mkdir/obj", Body=b"1")
s3.delete_object(Bucket="alpha", Key="made/by/mkdir/obj")
ok("mkdir directories stay", os.path.isdir(f"{MNT}/alpha/made/by/mkdir"))
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="alpha", Prefix="made/")["Contents"]]
ok("mkdir directories list as dir/ markers", keys == ["made/", "made/by/", "made/by/mkdir/"], keys)
ok("marker HEAD", s3.head_object(Bucket="alpha", Key="made/by/")["ContentLength"] == 0)
s3.delete_object(Bucket="alpha", Key="made/by/mkdir/")
ok("deleting an empty marker removes the directory", not os.path.exists(f"{MNT}/alpha/made/by/mkdir"))
s3.put_object(Bucket="alpha", Key="folder/", Body=b"")
ok("PUT of a marker makes a directory", os.path.isdir(f"{MNT}/alpha/folder"))
err("a marker takes no data", "InvalidArgument", 400, s3.put_object, Bucket="alpha", Key="folder2/", Body=b"x")
# a FUSE user standing in an implicit directory: the object goes, and so
# does the directory (it was S3's), but a directory a FUSE user made stays
s3.put_object(Bucket="alpha", Key="stay/obj", Body=b"1")
open(f"{MNT}/alpha/stay/fuse-file", "wb").close()
s3.delete_object(Bucket="alpha", Key="stay/obj")
ok("implicit directory holding a FUSE file stays", os.path.exists(f"{MNT}/alpha/stay/fuse-file"))

# ---- collisions ----------------------------------------------------------------
s3.put_object(Bucket="alpha", Key="col", Body=b"object")
e = err("key below an object's key", "KeyConflict", 409, s3.put_object, Bucket="alpha", Key="col/child", Body=b"x")
ok("conflict message names the object", "col" in e.response["Error"]["Message"])
ok("object kept after the conflict", s3.get_object(Bucket="alpha", Key="col")["Body"].read() == b"object")
s3.put_object(Bucket="alpha", Key="pre/child", Body=b"child")
err("key that is a prefix of others", "KeyConflict", 409, s3.put_object, Bucket="alpha", Key="pre", Body=b"x")
ok("child kept after the conflict", s3.get_object(Bucket="alpha", Key="pre/child")["Body"].read() == b"child")
err("copy onto a prefix", "KeyConflict", 409, s3.copy_object, Bucket="alpha", Key="pre", CopySource={"Bucket": "alpha", "Key": "col"})

# ---- copy ------------------------------------------------------------------------
r = s3.copy_object(Bucket="beta", Key="copied", CopySource={"Bucket": "alpha", "Key": "big/blob.bin"})
ok("copy_object ETag", r["CopyObjectResult"]["ETag"] == md5(big))
ok("copy_object data", s3.get_object(Bucket="beta", Key="copied")["Body"].read() == big)
s3.put_object(Bucket="alpha", Key="m", Body=b"meta", ContentType="text/x-a", Metadata={"k": "v"})
s3.copy_object(Bucket="alpha", Key="m2", CopySource="alpha/m")
h = s3.head_object(Bucket="alpha", Key="m2")
ok("copy keeps metadata", h["ContentType"] == "text/x-a" and h["Metadata"] == {"k": "v"}, h)
s3.copy_object(Bucket="alpha", Key="m3", CopySource="alpha/m", MetadataDirective="REPLACE", ContentType="text/x-b", Metadata={"n": "w"})
h = s3.head_object(Bucket="alpha", Key="m3")
ok("copy replaces metadata", h["ContentType"] == "text/x-b" and h["Metadata"] == {"n": "w"}, h)
err("copy onto itself without REPLACE", "InvalidRequest", 400, s3.copy_object, Bucket="alpha", Key="m", CopySource="alpha/m")
s3.copy_object(Bucket="alpha", Key="m", CopySource="alpha/m", MetadataDirective="REPLACE", Metadata={"x": "y"})
ok("copy onto itself with REPLACE", s3.head_object(Bucket="alpha", Key="m")["Metadata"] == {"x": "y"})
err("copy of a missing key", "NoSuchKey", 404, s3.copy_object, Bucket="alpha", Key="z", CopySource="alpha/none")
err("copy-source-if-match", "PreconditionFailed", 412, s3.copy_object, Bucket="alpha", Key="z", CopySource="alpha/m", CopySourceIfMatch='"0"')

# ---- listings ----------------------------------------------------------------------
s3.create_bucket(Bucket="lists")
want = sorted(["a0", "a-b", "a/b", "a/c/d", "b/x", "b/y", "c", "sp ace", "plus+sign", "dir/sub/one", "dir/sub/two", "dir/top", "z\u00e9t\u00e1", "ctl\x01char"])
for k in want:
    s3.put_object(Bucket="lists", Key=k, Body=k.encode())
ok("v2 lists every key in byte order", [o["Key"] for o in s3.list_objects_v2(Bucket="lists")["Contents"]] == sorted(want, key=lambda s: s.encode()))
ok("v1 lists every key in byte order", [o["Key"] for o in s3.list_objects(Bucket="lists")["Contents"]] == sorted(want, key=lambda s: s.encode()))
r = s3.list_objects_v2(Bucket="lists", Delimiter="/")
ok("v2 delimiter", [o["Key"] for o in r["Contents"]] == sorted(["a0", "a-b", "c", "sp ace", "plus+sign", "z\u00e9t\u00e1", "ctl\x01char"], key=lambda s: s.encode()) and [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "b/", "dir/"], r)
r = s3.list_objects_v2(Bucket="lists", Prefix="dir/", Delimiter="/")
ok("v2 prefix and delimiter", [o["Key"] for o in r["Contents"]] == ["dir/top"] and [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/sub/"], r)
r = s3.list_objects_v2(Bucket="lists", Prefix="dir/s")
ok("v2 partial prefix", [o["Key"] for o in r["Contents"]] == ["dir/sub/one", "dir/sub/two"], r)
r = s3.list_objects_v2(Bucket="lists", Prefix="a", Delimiter="-")
ok("v2 other delimiter", [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["a-"] and "a-b" not in [o["Key"] for o in r["Contents"]], r)
r = s3.list_objects_v2(Bucket="lists", StartAfter="b/x")
ok("v2 start-after", [o["Key"] for o in r["Contents"]][0] == "b/y", r)
# pagination: max-keys and continuation tokens, with and without delimiter
for delim in ("", "/"):
    got, token, pages = [], None, 0
    while True:
        kw = {"Bucket": "lists", "MaxKeys": 3, "Delimiter": delim}
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        pages += 1
        got += [o["Key"] for o in r.get("Contents", [])] + [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        ok(f"v2 page of at most 3 (delimiter {delim!r})", r["KeyCount"] <= 3 and r["MaxKeys"] == 3)
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    full = s3.list_objects_v2(Bucket="lists", Delimiter=delim)
    whole = [o["Key"] for o in full.get("Contents", [])] + [p["Prefix"] for p in full.get("CommonPrefixes", [])]
    ok(f"v2 pages add up (delimiter {delim!r})", sorted(got) == sorted(whole) and len(got) == len(whole) and pages > 1, (got, whole))
got = []
for page in s3.get_paginator("list_objects").paginate(Bucket="lists", PaginationConfig={"PageSize": 4}):
    got += [o["Key"] for o in page.get("Contents", [])]
ok("v1 marker pagination", got == sorted(want, key=lambda s: s.encode()), got)
r = s3.list_objects(Bucket="lists", Marker="b/y", MaxKeys=2)
ok("v1 marker and max-keys", [o["Key"] for o in r["Contents"]] == ["c", "ctl\x01char"] and r["IsTruncated"], r)
r = s3.list_objects(Bucket="lists", Delimiter="/", MaxKeys=2)
ok("v1 NextMarker with delimiter", r["IsTruncated"] and r["NextMarker"] == "a/", r)
r = s3.list_objects_v2(Bucket="lists", MaxKeys=0)
ok("max-keys 0", r["KeyCount"] == 0 and r["IsTruncated"], r)
err("invalid continuation token", "InvalidArgument", 400, s3.list_objects_v2, Bucket="lists", ContinuationToken="not-a-token")
err("list missing bucket", "NoSuchBucket", 404, s3.list_objects_v2, Bucket="missing-bucket")
# encoding-type=url on the wire: a raw response, not decoded by botocore
raw = client()
def keep_raw(http_response, parsed, **kw):
    keep_raw.body = http_response.content
raw.meta.events.register("after-call.s3.ListObjectsV2", keep_raw)
raw.list_objects_v2(Bucket="lists", Prefix="sp", EncodingType="url")
ok("encoding-type=url encodes keys", b"<Key>sp%20ace</Key>" in keep_raw.body, keep_raw.body)
r = s3.list_objects_v2(Bucket="lists", Prefix="ctl")
ok("url-encoded control characters round-trip", [o["Key"] for o in r["Contents"]] == ["ctl\x01char"], r)
r = s3.list_objects_v2(Bucket="lists", Prefix="a/", FetchOwner=True)
ok("fetch-owner", r["Contents"][0]["Owner"]["ID"] == "AKIAFULL", r)
o = s3.list_objects_v2(Bucket="lists", Prefix="a-b")["Contents"][0]
ok("listing ETag and size", o["ETag"] == md5(b"a-b") and o["Size"] == 3, o)
r = s3.list_object_versions(Bucket="lists", Prefix="b/")
ok("list_object_versions: null versions", [(v["Key"], v["VersionId"], v["IsLatest"]) for v in r["Versions"]] == [("b/x", "null", True), ("b/y", "null", True)] and r["Versions"][0]["ETag"] == md5(b"b/x"), r)
r = s3.list_object_versions(Bucket="lists", Delimiter="/", MaxKeys=2)
ok("list_object_versions: delimiter and max-keys", r["IsTruncated"] and [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["a/"] and r["NextKeyMarker"] == "a/", r)
r = s3.list_object_versions(Bucket="lists", KeyMarker="b/x", Prefix="b/")
ok("list_object_versions: key-marker", [v["Key"] for v in r["Versions"]] == ["b/y"], r)
ok("GetObject versionId=null", s3.get_object(Bucket="lists", Key="b/x", VersionId="null")["Body"].read() == b"b/x")
err("GetObject of another version", "InvalidArgument", 400, s3.get_object, Bucket="lists", Key="b/x", VersionId="3HL4kqtJlcpXroDTDmJ")
# names only the mount can make: keys over 1024 bytes are still listed
longdir = f"{MNT}/lists/" + "/".join(["l" * 200] * 5)
os.makedirs(longdir)
open(longdir + "/" + "f" * 200, "wb").close()
r = s3.list_objects_v2(Bucket="lists", Prefix="l")
files = [o["Key"] for o in r["Contents"] if not o["Key"].endswith("/")]
ok("keys over 1024 bytes made through the mount are listed", len(files) == 1 and len(files[0]) > 1024 and len(r["Contents"]) == 6, [len(k) for k in files])

# ---- delete --------------------------------------------------------------------------
s3.delete_object(Bucket="lists", Key="c")
err("deleted key is gone", "NoSuchKey", 404, s3.get_object, Bucket="lists", Key="c")
ok("delete of a missing key succeeds", s3.delete_object(Bucket="lists", Key="never")["ResponseMetadata"]["HTTPStatusCode"] == 204)
r = s3.delete_objects(Bucket="lists", Delete={"Objects": [{"Key": "a0"}, {"Key": "a/b"}, {"Key": "a/c/d"}, {"Key": "missing"}]})
ok("delete_objects", sorted(d["Key"] for d in r["Deleted"]) == ["a/b", "a/c/d", "a0", "missing"] and not r.get("Errors"), r)
ok("delete_objects pruned implicit directories", not os.path.exists(f"{MNT}/lists/a"))
r = s3.delete_objects(Bucket="lists", Delete={"Objects": [{"Key": "b/x"}], "Quiet": True})
ok("delete_objects quiet", not r.get("Deleted") and not r.get("Errors"), r)
err("delete_bucket not empty", "BucketNotEmpty", 409, s3.delete_bucket, Bucket="lists")
s3.create_bucket(Bucket="gone")
s3.put_object(Bucket="gone", Key="x/y", Body=b"1")
s3.delete_object(Bucket="gone", Key="x/y")
s3.delete_bucket(Bucket="gone")
ok("delete_bucket", "gone" not in [b["Name"] for b in s3.list_buckets()["Buckets"]] and not os.path.exists(f"{MNT}/gone"))
err("delete_bucket missing", "NoSuchBucket", 404, s3.delete_bucket, Bucket="gone")

# ---- multipart ------------------------------------------------------------------------
def mp_etag(parts):
    return '"' + hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f'-{len(parts)}"'

mp = s3.create_multipart_upload(Bucket="alpha", Key="mp/obj.bin", ContentType="application/x-mp", Metadata={"m": "1"})
uid = mp["UploadId"]
ok("create_multipart_upload", mp["Key"] == "mp/obj.bin" and len(uid) == 32, mp)
ok("an upload makes nothing in the bucket", not os.path.exists(f"{MNT}/alpha/mp") and not any(n.startswith(".") for n in os.listdir(MNT)), os.listdir(MNT))
p1, p2, p3 = pattern(5 << 20, 11), pattern((5 << 20) + 7, 12), b"tail"
U = lambda n, b: s3.upload_part(Bucket="alpha", Key="mp/obj.bin", UploadId=uid, PartNumber=n, Body=b)["ETag"]
ok("upload_part ETag", U(1, p1) == md5(p1))
U(2, b"to be replaced")
ok("upload_part again replaces the part", U(2, p2) == md5(p2))
U(3, p3)
ups = s3.list_multipart_uploads(Bucket="alpha")["Uploads"]
ok("list_multipart_uploads", [(u["Key"], u["UploadId"]) for u in ups] == [("mp/obj.bin", uid)], ups)
ok("list_multipart_uploads prefix", not s3.list_multipart_uploads(Bucket="alpha", Prefix="zzz").get("Uploads"))
ok("uploads listed per bucket", not s3.list_multipart_uploads(Bucket="beta").get("Uploads"))
parts = s3.list_parts(Bucket="alpha", Key="mp/obj.bin", UploadId=uid)["Parts"]
ok("list_parts", [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, len(p1), md5(p1)), (2, len(p2), md5(p2)), (3, 4, md5(p3))], parts)
r = s3.list_parts(Bucket="alpha", Key="mp/obj.bin", UploadId=uid, MaxParts=2)
ok("list_parts max-parts", r["IsTruncated"] and r["NextPartNumberMarker"] == 2 and len(r["Parts"]) == 2, r)
r = s3.list_parts(Bucket="alpha", Key="mp/obj.bin", UploadId=uid, PartNumberMarker=2)
ok("list_parts part-number-marker", [p["PartNumber"] for p in r["Parts"]] == [3], r)
C = lambda parts, key="mp/obj.bin", u=None: s3.complete_multipart_upload(Bucket="alpha", Key=key, UploadId=u or uid, MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})
err("complete with a wrong ETag", "InvalidPart", 400, C, [(1, md5(p1)), (2, md5(b"x")), (3, md5(p3))])
err("complete with a missing part", "InvalidPart", 400, C, [(1, md5(p1)), (4, md5(p3))])
err("complete out of order", "InvalidPartOrder", 400, C, [(2, md5(p2)), (1, md5(p1))])
err("upload_part of part 0", "InvalidArgument", 400, U, 0, b"x")
err("upload_part to an unknown upload", "NoSuchUpload", 404, s3.upload_part, Bucket="alpha", Key="mp/obj.bin", UploadId="0" * 32, PartNumber=1, Body=b"x")
err("upload_part with another key", "NoSuchUpload", 404, s3.upload_part, Bucket="alpha", Key="other", UploadId=uid, PartNumber=1, Body=b"x")
small = s3.create_multipart_upload(Bucket="alpha", Key="mp/small")["UploadId"]
es = [s3.upload_part(Bucket="alpha", Key="mp/small", UploadId=small, PartNumber=n, Body=b"tiny")["ETag"] for n in (1, 2)]
err("complete with a small part", "EntityTooSmall", 400, C, [(1, es[0]), (2, es[1])], "mp/small", small)
r = C([(1, md5(p1)), (2, md5(p2)), (3, md5(p3))])
ok("complete_multipart_upload ETag", r["ETag"] == mp_etag([p1, p2, p3]), r["ETag"])
g = s3.get_object(Bucket="alpha", Key="mp/obj.bin")
ok("completed object", g["Body"].read() == p1 + p2 + p3 and g["ETag"] == mp_etag([p1, p2, p3]))
ok("completed object keeps the upload's metadata", g["ContentType"] == "application/x-mp" and g["Metadata"] == {"m": "1"}, g)
ok("completed object through the mount", open(f"{MNT}/alpha/mp/obj.bin", "rb").read() == p1 + p2 + p3)
ok("listing shows the multipart ETag", s3.list_objects_v2(Bucket="alpha", Prefix="mp/obj")["Contents"][0]["ETag"] == mp_etag([p1, p2, p3]))
ok("completed upload is gone", [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="alpha").get("Uploads", [])] == [small])
err("complete twice", "NoSuchUpload", 404, C, [(1, md5(p1))])
s3.abort_multipart_upload(Bucket="alpha", Key="mp/small", UploadId=small)
ok("abort_multipart_upload", not s3.list_multipart_uploads(Bucket="alpha").get("Uploads"))
err("list_parts of an aborted upload", "NoSuchUpload", 404, s3.list_parts, Bucket="alpha", Key="mp/small", UploadId=small)
err("abort of an aborted upload", "NoSuchUpload", 404, s3.abort_multipart_upload, Bucket="alpha", Key="mp/small", UploadId=small)
err("multipart onto a prefix", "KeyConflict", 409, s3.create_multipart_upload, Bucket="alpha", Key="mp")
with open(f"{MNT}/alpha/mp/obj.bin", "ab") as f:
    f.write(b"!")
ok("FUSE write to a multipart object: plain MD5 again", s3.head_object(Bucket="alpha", Key="mp/obj.bin")["ETag"] == md5(p1 + p2 + p3 + b"!"))
# UploadPartCopy: parts from existing objects, whole and by range
pc = s3.create_multipart_upload(Bucket="beta", Key="assembled")["UploadId"]
r1 = s3.upload_part_copy(Bucket="beta", Key="assembled", UploadId=pc, PartNumber=1, CopySource={"Bucket": "alpha", "Key": "big/blob.bin"})
ok("upload_part_copy ETag", r1["CopyPartResult"]["ETag"] == md5(big), r1)
r2 = s3.upload_part_copy(Bucket="beta", Key="assembled", UploadId=pc, PartNumber=2, CopySource="alpha/big/blob.bin", CopySourceRange="bytes=100-199")
ok("upload_part_copy range", r2["CopyPartResult"]["ETag"] == md5(big[100:200]), r2)
err("upload_part_copy bad range", "InvalidRange", 416, s3.upload_part_copy, Bucket="beta", Key="assembled", UploadId=pc, PartNumber=3, CopySource="alpha/big/blob.bin", CopySourceRange=f"bytes=0-{len(big)}")
err("upload_part_copy condition", "PreconditionFailed", 412, s3.upload_part_copy, Bucket="beta", Key="assembled", UploadId=pc, PartNumber=3, CopySource="alpha/big/blob.bin", CopySourceIfMatch='"0"')
r = s3.complete_multipart_upload(Bucket="beta", Key="assembled", UploadId=pc, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
ok("complete from copied parts", s3.get_object(Bucket="beta", Key="assembled")["Body"].read() == big + big[100:200] and r["ETag"] == mp_etag([big, big[100:200]]))
# boto3's managed transfer: multipart above the threshold
from boto3.s3.transfer import TransferConfig
src = os.path.join(os.path.dirname(MNT), "transfer.bin")
blob = pattern(13 << 20, 21)
open(src, "wb").write(blob)
tc = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=4)
s3.upload_file(src, "beta", "transfer/blob", Config=tc)
h = s3.head_object(Bucket="beta", Key="transfer/blob")
ok("upload_file in parts", h["ContentLength"] == len(blob) and h["ETag"].endswith('-3"'), h)
dst = src + ".back"
s3.download_file("beta", "transfer/blob", dst, Config=tc)
ok("download_file in ranges", open(dst, "rb").read() == blob and open(f"{MNT}/beta/transfer/blob", "rb").read() == blob)

# ---- keys and signatures ----------------------------------------------------------------
err("bad signature", "SignatureDoesNotMatch", 403, client(secret="wrong-secret-000").list_buckets)
err("unknown access key", "InvalidAccessKeyId", 403, client(access="AKIANOBODY").list_buckets)
anon = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                    config=Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"}))
err("anonymous request", "AccessDenied", 403, anon.get_object, Bucket="alpha", Key="plain")
ro = client("AKIARO", "secret-ro-00001")
ok("read-only key reads", ro.get_object(Bucket="alpha", Key="fresh")["Body"].read() == b"first")
err("read-only key refused on PUT", "AccessDenied", 403, ro.put_object, Bucket="alpha", Key="ro-put", Body=b"1")
err("read-only key refused on DELETE", "AccessDenied", 403, ro.delete_object, Bucket="alpha", Key="fresh")
err("read-only key refused on CreateBucket", "AccessDenied", 403, ro.create_bucket, Bucket="ro-bucket")
err("read-only key refused on multipart", "AccessDenied", 403, ro.create_multipart_upload, Bucket="alpha", Key="ro-mp")
ok("read-only key lists uploads", ro.list_multipart_uploads(Bucket="alpha")["ResponseMetadata"]["HTTPStatusCode"] == 200)
ok("read-only refusal changed nothing", not os.path.exists(f"{MNT}/alpha/ro-put") and os.path.exists(f"{MNT}/alpha/fresh"))
lim = client("AKIABETA", "secret-beta-0001")
ok("bucket-limited key sees its buckets", [b["Name"] for b in lim.list_buckets()["Buckets"]] == ["beta"])
lim.put_object(Bucket="beta", Key="mine", Body=b"1")
err("bucket-limited key refused elsewhere", "AccessDenied", 403, lim.get_object, Bucket="alpha", Key="fresh")
err("bucket-limited key cannot copy from elsewhere", "AccessDenied", 403, lim.copy_object, Bucket="beta", Key="stolen", CopySource="alpha/fresh")
url = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "fresh"}, ExpiresIn=60)
import urllib.request
ok("presigned GET", urllib.request.urlopen(url).read() == b"first")
try:
    urllib.request.urlopen(url.replace("Signature=", "Signature=0"))
    raise AssertionError("tampered presigned URL accepted")
except urllib.error.HTTPError as e:
    ok("tampered presigned URL refused", e.code == 403, e.code)

# ---- malformed and oversize requests, presign expiry ---------------------------------------
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import urllib.error


def raw(method, path, body=b"", headers=None):
    """A signed request with a body of our own; (status, response body)."""
    req = botocore.awsrequest.AWSRequest(method=method, url=ENDPOINT + path, data=body, headers=dict(headers or {}))
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials("AKIAFULL", "secret-full-0001"), "s3", "us-east-1").add_auth(req)
    p = req.prepare()
    r = urllib.request.Request(p.url, data=body if body else None, method=method, headers=dict(p.headers))
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


md5b64 = lambda b: __import__("base64").b64encode(hashlib.md5(b).digest()).decode()
bad = b"<Delete><Object><Key>fresh</Key></Object>"
st, b = raw("POST", "/alpha?delete", bad, {"Content-MD5": md5b64(bad)})
ok("malformed XML", st == 400 and b"<Code>MalformedXML</Code>" in b, (st, b))
ok("malformed XML deleted nothing", s3.get_object(Bucket="alpha", Key="fresh")["Body"].read() == b"first")
huge = b"<Delete>" + b"<Object><Key>" + b"k" * 1000 + b"</Key></Object>" * 1 + b" " * (5 << 20) + b"</Delete>"
st, b = raw("POST", "/alpha?delete", huge, {"Content-MD5": md5b64(huge)})
ok("oversize XML body refused", st == 400 and b"MaxMessageLengthExceeded" in b, (st, b[:200]))
many = b"<Delete>" + b"".join(b"<Object><Key>k%d</Key></Object>" % i for i in range(1001)) + b"</Delete>"
st, b = raw("POST", "/alpha?delete", many, {"Content-MD5": md5b64(many)})
ok("DeleteObjects of over 1000 keys refused", st == 400 and b"MalformedXML" in b, (st, b[:200]))
ok("the endpoint serves on after bad requests", s3.head_bucket(Bucket="alpha")["ResponseMetadata"]["HTTPStatusCode"] == 200)
url = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "fresh"}, ExpiresIn=1)
time.sleep(2)
try:
    urllib.request.urlopen(url)
    raise AssertionError("expired presigned URL accepted")
except urllib.error.HTTPError as e:
    body = e.read()
    ok("expired presigned URL refused", e.code == 403 and b"AccessDenied" in body, (e.code, body))
v4 = client(signature_version="s3v4")
for name, c in (("SigV2", s3), ("SigV4", v4)):
    url = c.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "fresh"}, ExpiresIn=60)
    ok(f"presigned GET ({name})", urllib.request.urlopen(url).read() == b"first")
    url = c.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "fresh"}, ExpiresIn=8 * 24 * 3600)
    try:
        urllib.request.urlopen(url)
        raise AssertionError(f"{name} presigned URL valid for over 7 days accepted")
    except urllib.error.HTTPError as e:
        ok(f"presigned URL over 7 days refused ({name})", e.code == 400 and b"AuthorizationQueryParametersError" in e.read(), e.code)
url = v4.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "fresh"}, ExpiresIn=1)
time.sleep(2)
try:
    urllib.request.urlopen(url)
    raise AssertionError("expired SigV4 presigned URL accepted")
except urllib.error.HTTPError as e:
    body = e.read()
    ok("expired SigV4 presigned URL refused", e.code == 403 and b"AccessDenied" in body, (e.code, body))

print(f"{passed} passed, 0 failed")
