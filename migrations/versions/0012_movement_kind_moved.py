"""movement kind 'moved': a batch put in another location

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 16:05:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_BEFORE = ("received", "reserved", "released", "picked", "dispensed", "returned",
           "written_off", "quarantined", "recalled", "expired", "counted")
_AFTER = (*_BEFORE, "moved")


def _check(values: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade():
    with op.batch_alter_table('stock_movements', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_stock_movements_movement_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_stock_movements_movement_kind'),
                                         _check(_AFTER))


def downgrade():
    # The ledger is append-only (a trigger refuses DELETE): recorded moves cannot be undone.
    used = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM stock_movements WHERE kind = 'moved'")).scalar()
    if used:
        raise RuntimeError(f"{used} batch move(s) are on record; cannot downgrade past 0012")
    with op.batch_alter_table('stock_movements', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_stock_movements_movement_kind'), type_='check')
        batch_op.create_check_constraint(op.f('ck_stock_movements_movement_kind'),
                                         _check(_BEFORE))
