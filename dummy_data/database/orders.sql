-- A small PostgreSQL table for the database card's PostgreSQL examples (docs/database.md):
--   psql "$SHOP_DSN" -f dummy_data/database/orders.sql
-- 200 orders in two regions; every tenth amount is NULL (to impute), tags are text arrays.
SET client_min_messages = warning;
BEGIN;
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (
  order_id integer PRIMARY KEY,
  region text NOT NULL,
  amount numeric(10, 2),
  created_at timestamptz NOT NULL,
  tags text[] NOT NULL
);
INSERT INTO orders
SELECT g,
       CASE WHEN g % 4 = 0 THEN 'us' ELSE 'eu' END,
       CASE WHEN g % 10 = 0 THEN NULL ELSE round((g * 37 % 500)::numeric / 7, 2) END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '97 minutes',
       CASE WHEN g % 3 = 0 THEN ARRAY['gift'] WHEN g % 3 = 1 THEN ARRAY['express', 'gift'] ELSE ARRAY[]::text[] END
FROM generate_series(1, 200) AS g;
COMMIT;
