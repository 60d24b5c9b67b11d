"""ids from the database, job heartbeat

Revision ID: 0002
Revises: 0001

Image, annotation and category ids are allocated by the database (SQLite: the 64-bit rowid; PostgreSQL:
64-bit columns with an owned sequence, moved past the ids already there), never by ``max(id) + 1`` in
Python, so two importers or a background writer cannot collide. Jobs get a heartbeat and the host they
run on.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# table -> columns elsewhere that refer to its id
_ID_TABLES = {"categories": [("annotations", "category_id")], "images": [("annotations", "image_id")],
              "annotations": []}


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: an INTEGER PRIMARY KEY already is the 64-bit rowid the database allocates
    for table, refs in _ID_TABLES.items():
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id TYPE BIGINT")
        for ref_table, column in refs:
            op.execute(f"ALTER TABLE {ref_table} ALTER COLUMN {column} TYPE BIGINT")
        op.execute(f"CREATE SEQUENCE {table}_id_seq AS BIGINT OWNED BY {table}.id")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{table}_id_seq')")
        op.execute(f"SELECT setval('{table}_id_seq', COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, refs in _ID_TABLES.items():
            op.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
            op.execute(f"DROP SEQUENCE {table}_id_seq")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('host')
