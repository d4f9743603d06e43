"""owings: units still owed after a short supply can be ordered against the same item

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26 18:42:15.507164

"""
from datetime import datetime, timedelta, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

# Orders whose packed units count as supplied (they left stock for the patient).
_SUPPLIED = "('packed', 'out_for_delivery', 'failed', 'delivered')"
_SUPPLIED_UNITS = f"""(SELECT SUM(l.quantity_supplied) FROM order_lines l
    JOIN orders o ON o.id = l.order_id
    WHERE l.prescription_item_id = prescription_items.id AND o.status IN {_SUPPLIED})"""
# Only recent short supplies on prescriptions that may still be supplied: an old balance
# was most likely settled by hand already, and owing it again would supply it twice.
BACKFILL_DAYS = 90
BACKFILL = sa.text(f"""
    UPDATE prescription_items
    SET quantity_owed = CAST(quantity AS INTEGER) - {_SUPPLIED_UNITS}
    WHERE supplied_at IS NOT NULL AND supplied_at >= :since
      AND quantity = CAST(quantity AS INTEGER)
      AND {_SUPPLIED_UNITS} BETWEEN 1 AND CAST(quantity AS INTEGER) - 1
      AND prescription_id IN (SELECT id FROM prescriptions
                              WHERE status IN ('verified', 'dispensed'))
""")


def backfill_since() -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=BACKFILL_DAYS)


def upgrade():
    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('for_owing', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('prescription_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quantity_owed', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_check_constraint(op.f('ck_prescription_items_quantity_owed_non_negative'),
                                         'quantity_owed >= 0')

    # Items supplied short before this revision owe the balance (whole-unit quantities only).
    op.get_bind().execute(BACKFILL, {"since": backfill_since()})


def downgrade():
    with op.batch_alter_table('prescription_items', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_prescription_items_quantity_owed_non_negative'),
                                 type_='check')
        batch_op.drop_column('quantity_owed')

    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.drop_column('for_owing')
