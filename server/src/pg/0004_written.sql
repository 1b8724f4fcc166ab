-- Which documents each store write touched, in commit order (pg/store.rs,
-- pg/listen.rs): a node reads what other nodes wrote from the last number
-- it read, so a notice lost while its listening connection was down loses
-- nothing. Documents appear only as keyed hashes.
CREATE TABLE store_written (
    seq        BIGINT PRIMARY KEY,
    node       TEXT NOT NULL,
    doc_refs   BYTEA[] NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- 'given': the last number given out. A writer takes the next by updating
-- this row, which it then holds until its commit: numbers become visible
-- in order, with no gap left open. 'pruned': the last number whose row
-- may have been deleted as old; a node that had read less than it must
-- refresh everything it holds.
CREATE TABLE store_written_marks (
    mark TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);
INSERT INTO store_written_marks (mark, seq) VALUES ('given', 0), ('pruned', 0);
