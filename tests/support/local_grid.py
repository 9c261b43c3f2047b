"""Silos served in this process through Flower's own message serialization, for strategy and mod tests."""

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage


class LocalGrid:
    """Silos in this process: each message is serialized, handed to `app` with its node's Context (an exception
    becomes an error reply, as Flower's runtimes do), and the reply serialized back; `sent` keeps each reply's
    bytes, `requests` what the silos received, `replies` what the server got."""

    def __init__(self, app: ClientApp, partitions: dict[int, int]) -> None:
        self.app = app
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config={"partition-id": p}, state=RecordDict(), run_config={})
            for node, p in partitions.items()
        }
        self.sent: list[bytes] = []
        self.requests: list[Message] = []
        self.replies: list[Message] = []

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            received = message_from_proto(message_to_proto(message))
            self.requests.append(received)
            try:
                reply = self.app(received, self.contexts[message.metadata.dst_node_id])
            except Exception as err:  # noqa: BLE001 - a silo's failure of any kind is an error reply
                reply = Message(Error(code=0, reason=repr(err)), reply_to=received)
            payload = message_to_proto(reply).SerializeToString()
            self.sent.append(payload)
            replies.append(message_from_proto(ProtoMessage.FromString(payload)))
        self.replies += replies
        return replies
