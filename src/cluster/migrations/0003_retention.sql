-- Retention of shared records (docs/cluster.md, "Retention"): rows are first marked,
-- then their objects are deleted, then the rows; readers skip marked rows, and the
-- sweeper finishes whatever an interrupted pass left marked.
ALTER TABLE cluster_record_objects ADD COLUMN deleting boolean NOT NULL DEFAULT false;

CREATE INDEX cluster_record_objects_deleting
    ON cluster_record_objects (object_key) WHERE deleting;
