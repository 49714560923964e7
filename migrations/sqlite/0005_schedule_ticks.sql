-- One row per schedule tick that ran: the instance that inserts it first runs
-- the function, so each tick runs once however many instances there are.
CREATE TABLE schedule_ticks (
    function TEXT NOT NULL,
    tick     INTEGER NOT NULL,
    PRIMARY KEY (function, tick)
);
