"""moto's server, with each DynamoDB operation run alone (`python tests/moto_server.py
-H HOST -p PORT`, the same options as `moto_server`).

moto 5.2.5 serves requests on threads, and its TransactWriteItems cancels a transaction by
putting back a copy of every table it touches, taken when the call began: writes that
other requests made to those tables meanwhile are erased with it. DynamoDB cancels only
the transaction's own items. The worker cancels transactions routinely (a duplicate
event, a stale record), so under concurrency the emulator lost other events' writes.
Running each DynamoDB operation under one lock gives the isolation DynamoDB has; SQS and
EventBridge calls (long polls included) stay concurrent.
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_ONE_AT_A_TIME = threading.RLock()

_OPERATIONS = (
    "put_item",
    "get_item",
    "query",
    "scan",
    "update_item",
    "delete_item",
    "transact_write_items",
    "transact_get_items",
    "batch_get_item",
)


def _alone(operation):
    @functools.wraps(operation)
    def run(*args, **kwargs):
        with _ONE_AT_A_TIME:
            return operation(*args, **kwargs)

    return run


for _name in _OPERATIONS:
    setattr(DynamoDBBackend, _name, _alone(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.exit(main())
