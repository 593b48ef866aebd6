-- The sample rows of databus_db: one app and one auth rule on topic test156.
-- scripts/services.sh loads them after scripts/schema.sql, in databus_db.
-- Idempotent: safe to load any number of times (scripts/services.sh up does).
INSERT IGNORE INTO app_tb  (id,app_key,app_secret,cluster) VALUES (1,'app_key1','app_secret1','cluster1');
INSERT IGNORE INTO auth_tb (id,app_id,group_name,operation,topic) VALUES (1,1,'group_name1',3,'test156');
