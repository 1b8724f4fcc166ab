// The reference automerge-repo sync server (as in automerge-repo's own
// sync-server example): WebSocket network, file-system storage, announces
// nothing, answers every request. Usage: node server.mjs PORT DATA_DIR
import { Repo } from "@automerge/automerge-repo";
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { WebSocketServer } from "ws";

const [port, dir] = process.argv.slice(2);
const wss = new WebSocketServer({ port: Number(port) });
new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: "js-sync-server",
  sharePolicy: async () => false,
});
wss.on("listening", () => console.log("ready"));
