-- More room for HOT updates (issue #18, WAL per step). A run is inserted narrow (~200 B) and
-- each move rewrites it with its status context (~460 B in the one-recipient path, twice per
-- two-step run); at fillfactor 50 a page's inserts left too little room for those versions
-- and 0.4-0.7 of a run's 1.6-1.8 updates were not HOT, each then writing an entry in every
-- index of runs. A delivery's claim is HOT only when its page has room likewise.
--
-- Measured (bench.wal, 1,000 one-recipient two-step triggers drained by 2 workers, WAL by
-- relation, interleaved with main): run updates HOT 0.87/1.59 -> 1.72/1.90 per run, delivery
-- heap records 5.8 -> 5.5 per step, WAL 6,525-6,569 -> 6,404-6,407 B per step. The cost is
-- room: a freshly inserted page holds a fifth (runs) or a quarter (deliveries) of what it
-- could, filled up by the rows' later versions; existing pages keep their layout until
-- rewritten (VACUUM FULL or pg_repack).

ALTER TABLE chimeway_workflow_runs SET (fillfactor = 20);
ALTER TABLE chimeway_deliveries SET (fillfactor = 25);
