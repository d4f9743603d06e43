from pathlib import Path

import pandas as pd

from inventory.bench import load_pharma_daily, load_usaid, make_timing_input


def write_fake_data(root: Path) -> Path:
    (root / "pharma_sales").mkdir(parents=True)
    (root / "usaid_contraceptive").mkdir()
    cats = "M01AB,M01AE,N02BA,N02BE,N05B,N05C,R03,R06"
    (root / "pharma_sales" / "salesdaily.csv").write_text(
        f"datum,{cats},Year,Month,Hour,Weekday Name\n"
        "01-02-2014,0,3.67,3.4,32.4,7,0,0,2,2014,1,248,Thursday\n"
        "1/3/2014,8,4,4.4,50.6,16,0,20,4,2014,1,276,Friday\n"
        "01-13-2014,2,1,6.5,61.85,10,0,9,1,2014,1,276,Monday\n"
    )
    header = (
        '"year","month","region","district","site_code","product_code","stock_initial",'
        '"stock_received","stock_distributed","stock_adjustment","stock_end",'
        '"average_monthly_consumption","stock_stockout_days","stock_ordered"\n'
    )
    rows = [
        "2019,1,R,D,C1,P1,0,0,5,0,0,0,0,0",
        "2019,2,R,D,C1,P1,0,0,7,0,0,0,0,0",
        "2019,2,R,D,C2,P1,0,0,1,0,0,0,0,0",
    ]
    (root / "usaid_contraceptive" / "contraceptive_logistics_data.csv").write_text(
        header + "\n".join(rows) + "\n"
    )
    return root


def test_pharma_dates_are_month_first_and_gaps_are_filled(tmp_path: Path) -> None:
    df = load_pharma_daily(write_fake_data(tmp_path))
    m01ab = df[df["unique_id"] == "M01AB"]
    assert m01ab["ds"].min() == pd.Timestamp("2014-01-02")
    assert m01ab["ds"].max() == pd.Timestamp("2014-01-13")
    assert len(m01ab) == 12  # 2..13 January, missing days as zero
    assert m01ab["y"].sum() == 10.0


def test_usaid_complete_series_and_resampling(tmp_path: Path) -> None:
    root = write_fake_data(tmp_path)
    assert load_usaid(root)["unique_id"].unique().tolist() == ["C1/P1"]
    assert load_usaid(root, complete_only=False)["unique_id"].nunique() == 2
    target = tmp_path / "big.csv"
    make_timing_input(root, 7, target)
    big = pd.read_csv(target)
    assert big["unique_id"].nunique() == 7
    assert set(big.columns) == {"unique_id", "ds", "y"}
