-- Realtime reads the change log one commit at a time: the rows one commit
-- wrote share `commit_id` (a commit's rows are not always adjacent in `seq`
-- order on PostgreSQL, where concurrent transactions draw from one sequence),
-- and `create_time` lets a change render its document exactly as REST does.
ALTER TABLE changes ADD COLUMN commit_id INTEGER;
ALTER TABLE changes ADD COLUMN create_time INTEGER;
UPDATE changes SET commit_id = -seq, create_time = time WHERE commit_id IS NULL;
CREATE INDEX changes_by_commit ON changes (commit_id);
-- Rows older than the retention window are pruned by time.
CREATE INDEX changes_by_time ON changes (time);
