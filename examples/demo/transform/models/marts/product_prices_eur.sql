-- each product's price in EUR at the newest rate (EUR itself has no rate row)
with latest as (
    select quote, rate
    from {{ ref('stg_rates') }}
    where rate_date = (select max(rate_date) from {{ ref('stg_rates') }})
)
select p.product_id, p.name, p.category, p.currency, p.price,
       round(p.price / coalesce(l.rate, 1.0), 2) as price_eur
from {{ ref('stg_products') }} p
left join latest l on l.quote = p.currency
