"""Local infrastructure: an S3-protocol server on 127.0.0.1 and Ray cluster configs."""
