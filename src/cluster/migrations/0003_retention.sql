-- Retention of shared records (docs/cluster.md, "Retention"): rows are first marked,
-- then their objects are deleted, then the rows; readers skip marked rows, and the
-- sweeper finishes whatever an interrupted pass left marked.
ALTER TABLE cluster_record_objects ADD COLUMN deleting boolean NOT NULL DEFAULT false;

CREATE INDEX cluster_record_objects_deleting
    ON cluster_record_objects (object_key) WHERE deleting;

-- Where each shard's committed records end (one past the highest committed offset),
-- advanced in the same fenced transaction that indexes an object, so that LATEST and a
-- new owner's first offset stay right after retention has removed every row.
CREATE TABLE cluster_shard_ends (
    stream       text    NOT NULL,
    stream_epoch bigint  NOT NULL,
    shard        integer NOT NULL,
    end_offset   bigint  NOT NULL,
    PRIMARY KEY (stream, stream_epoch, shard)
);
