using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

using static System.FormattableString;

namespace Quantization;

/// <summary>
/// An int8 KV cache for one sequence of a decoder model, with attention computed on the int8 data. Append each layer's
/// keys and values per token (or a prefill block); stored tokens are never re-quantized. Memory comes from fixed-size
/// blocks of a <see cref="KvCacheBlockPool"/> (growing copies nothing); <see cref="Dispose"/> returns them.
/// </summary>
/// <remarks>
/// <para>Keys and values are laid out [tokens, KV heads, head dim] in appends; queries and outputs [query heads, head dim].
/// Query head i attends with KV head i / <see cref="KvCacheOptions.QueryHeadsPerKvHead"/> (grouped-query attention).</para>
/// <para>An append that is rejected (bad shape, the token limit, NaN or infinity, an exhausted pool) leaves the cache as it was.
/// One cache is not thread-safe; many caches may share one pool across threads.</para>
/// </remarks>
public sealed class Int8KvCache : IDisposable
{
    /// <summary>
    /// The int8 K/V bytes of a layer from which attention asks for each next block in software: below this the layer sits
    /// in the core's caches, and the prefetch instructions would only cost.
    /// </summary>
    private const long PrefetchBytes = 1L << 21;

    private static readonly QuantizationScheme PerTokenScheme = new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerToken);

    private readonly KvCacheOptions _options;
    private readonly KvCacheBlockLease _pool; // the pool, through an account that gives its capacity back if this cache is never disposed
    private readonly List<KvCacheBlock>[] _blocks;
    private readonly int[] _quantized;
    private readonly int[] _resident;
    private readonly float[] _windowKeys;
    private readonly float[] _windowValues;
    private readonly int[] _channelZeroPoints;
    private bool _disposed;

    /// <summary>Initializes a new instance of the <see cref="Int8KvCache"/> class with its own pool, large enough for <see cref="KvCacheOptions.MaxTokens"/>.</summary>
    /// <param name="options">The cache's shape and scheme.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is <see langword="null"/>.</exception>
    public Int8KvCache(KvCacheOptions options)
        : this(options, new KvCacheBlockPool(options ?? throw new ArgumentNullException(nameof(options)), BlocksFor(options)))
    {
    }

    /// <summary>Initializes a new instance of the <see cref="Int8KvCache"/> class that rents its blocks from a shared pool.</summary>
    /// <param name="options">The cache's shape and scheme.</param>
    /// <param name="pool">The pool; its blocks must fit the options (same KV heads, head dim, block tokens and scheme kind).</param>
    /// <exception cref="ArgumentNullException">An argument is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The pool's blocks do not fit the options.</exception>
    public Int8KvCache(KvCacheOptions options, KvCacheBlockPool pool)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(pool);
        KvCacheBlockLayout layout = KvCacheBlockLayout.From(options);
        if (pool.Layout != layout)
        {
            throw new ArgumentException($"The pool's blocks ({pool.Layout}) do not fit this cache's options ({layout}); create the pool from options with the same KV heads, head dim, block tokens and scheme.", nameof(pool));
        }

        _options = options;
        _pool = new KvCacheBlockLease(pool);
        _blocks = new List<KvCacheBlock>[options.Layers];
        for (int layer = 0; layer < options.Layers; layer++)
        {
            _blocks[layer] = [];
        }

        _quantized = new int[options.Layers];
        _resident = new int[options.Layers];
        int window = options.Scheme.Kind == KvCacheSchemeKind.Kivi ? options.Layers * options.Scheme.ResidentTokens * options.TokenWidth : 0;
        _windowKeys = ArrayPool<float>.Shared.Rent(window);
        _windowValues = ArrayPool<float>.Shared.Rent(window);
        _channelZeroPoints = options.Scheme.HasStaticKeys ? new int[options.TokenWidth] : [];
    }

    /// <summary>Gets the cache's shape and scheme.</summary>
    public KvCacheOptions Options => _options;

    /// <summary>Gets the tokens every layer holds (the smallest layer count; between decode steps all layers agree).</summary>
    public int Count
    {
        get
        {
            int count = int.MaxValue;
            for (int layer = 0; layer < _options.Layers; layer++)
            {
                count = Math.Min(count, _quantized[layer] + _resident[layer]);
            }

            return count;
        }
    }

    /// <summary>
    /// Gets the bytes one token takes in the quantized history, all layers: int8 keys and values plus their scales
    /// (a KIVI key channel scale is shared by a group of tokens). The KIVI float window and the static scales are fixed
    /// costs, not counted here.
    /// </summary>
    public double BytesPerToken
    {
        get
        {
            KvCacheScheme scheme = _options.Scheme;
            double scaleBytes = scheme.Kind switch
            {
                KvCacheSchemeKind.DynamicPerTokenHead => 2 * sizeof(float),
                KvCacheSchemeKind.StaticKeysPerChannel => sizeof(float),
                KvCacheSchemeKind.Kivi => sizeof(float) * (1 + ((double)_options.HeadDim / scheme.GroupSize)),
                _ => 0,
            };
            return (double)_options.Layers * _options.KvHeads * ((2.0 * _options.HeadDim) + scaleBytes);
        }
    }

    /// <summary>Gets the tokens a layer holds (quantized plus, for KIVI, those still in the float window).</summary>
    /// <param name="layer">The layer.</param>
    /// <returns>The layer's token count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache.</exception>
    public int GetCount(int layer)
    {
        KvCacheArguments.ValidateLayer(_options, layer);
        return _quantized[layer] + _resident[layer];
    }

    /// <summary>Appends one token's keys and values to a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [KV heads, head dim].</param>
    /// <param name="values">The values, [KV heads, head dim].</param>
    /// <exception cref="ArgumentException">See <see cref="Append(int, ReadOnlySpan{float}, ReadOnlySpan{float}, int)"/>.</exception>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values) => Append(layer, keys, values, 1);

    /// <summary>Appends a block of tokens' keys and values to a layer (a prompt's prefill, or one decode step).</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">The keys, [tokens, KV heads, head dim].</param>
    /// <param name="values">The values, [tokens, KV heads, head dim].</param>
    /// <param name="tokens">The tokens in the block.</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache, <paramref name="tokens"/> is not positive, or the layer would exceed <see cref="KvCacheOptions.MaxTokens"/>.</exception>
    /// <exception cref="ArgumentException">The keys or values do not hold tokens x KV heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The keys or values contain NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The pool has no free block for the new tokens.</exception>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        bool kivi = _options.Scheme.Kind == KvCacheSchemeKind.Kivi;
        KvCacheArguments.ValidateAppend(_options, layer, GetCount(layer), keys, values, tokens, checkFinite: kivi);
        if (kivi)
        {
            AppendToWindow(layer, keys, values, tokens);
        }
        else
        {
            AppendQuantized(layer, keys, values, tokens);
        }
    }

    /// <summary>
    /// Computes attention for one query token on a layer's int8 data: for each query head,
    /// <c>softmax(q . K / sqrt(headDim)) . V</c> over every token the layer holds.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="query">The query, [query heads, head dim].</param>
    /// <param name="output">Receives the attention output, [query heads, head dim].</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache.</exception>
    /// <exception cref="ArgumentException">The query or output does not hold query heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The query contains NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The layer holds no tokens.</exception>
    /// <remarks>
    /// Each query head is quantized to int16 (scale max |q| / 32767, with static or KIVI key channel scales folded in
    /// first), so the key dots are exact int32 sums of int8 x int16; per-token key scales multiply the dots. The softmax
    /// subtracts the maximum score. Value scales are folded into the softmax weights (per token) or applied to the output
    /// (static per channel). Every query head of a group shares one pass over its KV head's keys and values.
    /// </remarks>
    public void Attend(int layer, ReadOnlySpan<float> query, Span<float> output)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = GetCount(layer);
        KvCacheArguments.ValidateAttend(_options, layer, count, query, output, 1, 1, nameof(query));
        KvCacheAttention.Run(_options, count, 1, 1, query, output, new HeadAttention(this, layer));
    }

    /// <summary>
    /// Computes causal attention for the last <paramref name="tokens"/> tokens of a layer (a prompt's prefill, after
    /// appending their keys and values): token t of the block attends to the first <c>count - tokens + t + 1</c> tokens.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="queries">The queries, [tokens, query heads, head dim].</param>
    /// <param name="output">Receives the attention outputs, [tokens, query heads, head dim].</param>
    /// <param name="tokens">The query tokens: the last tokens the layer holds.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is not positive or exceeds the layer's tokens; see also <see cref="Attend(int, ReadOnlySpan{float}, Span{float})"/>.</exception>
    /// <remarks>
    /// Every query row of a block of tokens shares one pass over each KV head's int8 keys and values. For the dynamic and
    /// static schemes the result has the same bits as <see cref="Attend(int, ReadOnlySpan{float}, Span{float})"/> called
    /// after each token's append; KIVI tokens that the window has flushed since are attended on their int8 form.
    /// </remarks>
    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int tokens) => Attend(layer, queries, output, tokens, 1);

    /// <summary>
    /// Computes causal attention for the last <paramref name="tokens"/> tokens of a layer on up to
    /// <paramref name="threads"/> threads, each taking a share of the KV heads; the result has the same bits whatever the
    /// thread count.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="queries">The queries, [tokens, query heads, head dim].</param>
    /// <param name="output">Receives the attention outputs, [tokens, query heads, head dim].</param>
    /// <param name="tokens">The query tokens: the last tokens the layer holds (1 for a decode step).</param>
    /// <param name="threads">The most threads to use (at most the KV heads are used).</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the cache, <paramref name="tokens"/> is not positive or exceeds the layer's tokens, or <paramref name="threads"/> is not positive.</exception>
    /// <exception cref="ArgumentException">The queries or output do not hold tokens x query heads x head dim elements.</exception>
    /// <exception cref="NonFiniteValueException">The queries contain NaN or an infinity.</exception>
    /// <exception cref="InvalidOperationException">The layer holds no tokens.</exception>
    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int tokens, int threads)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = GetCount(layer);
        KvCacheArguments.ValidateAttend(_options, layer, count, queries, output, tokens, threads, nameof(queries));
        KvCacheAttention.Run(_options, count, tokens, threads, queries, output, new HeadAttention(this, layer));
    }

    /// <summary>Dequantizes one KV head's keys of a layer, for callers that bring their own attention kernel.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="kvHead">The KV head.</param>
    /// <param name="destination">Receives the keys, [<see cref="GetCount"/>, head dim]: <c>q * scale</c> (the KIVI window's tokens as stored, in float).</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer or head is outside the cache.</exception>
    /// <exception cref="ArgumentException">The destination does not hold the layer's tokens x head dim elements.</exception>
    public void DequantizeKeys(int layer, int kvHead, Span<float> destination) => Dequantize(layer, kvHead, destination, keys: true);

    /// <summary>Dequantizes one KV head's values of a layer, for callers that bring their own attention kernel.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="kvHead">The KV head.</param>
    /// <param name="destination">Receives the values, [<see cref="GetCount"/>, head dim].</param>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The layer or head is outside the cache.</exception>
    /// <exception cref="ArgumentException">The destination does not hold the layer's tokens x head dim elements.</exception>
    public void DequantizeValues(int layer, int kvHead, Span<float> destination) => Dequantize(layer, kvHead, destination, keys: false);

    /// <summary>Forgets every token of every layer and returns the blocks to the pool, so the cache can serve a new sequence.</summary>
    /// <exception cref="ObjectDisposedException">The cache has been disposed.</exception>
    public void Clear()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ReturnBlocks();
    }

    /// <summary>Returns the cache's blocks to the pool; the cache cannot be used afterwards.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        ReturnBlocks();
        _pool.Dispose();
        ArrayPool<float>.Shared.Return(_windowKeys);
        ArrayPool<float>.Shared.Return(_windowValues);
    }

    private void ReturnBlocks()
    {
        foreach (List<KvCacheBlock> blocks in _blocks)
        {
            _pool.Return(blocks);
            blocks.Clear();
        }

        Array.Clear(_quantized);
        Array.Clear(_resident);
    }

    private static int BlocksFor(KvCacheOptions options) =>
        options.Layers * ((options.MaxTokens + options.BlockTokens - 1) / options.BlockTokens);

    /// <summary>
    /// Static or dynamic: quantizes the block row by row ((token, KV head) rows of head dim) into scratch, rents the
    /// blocks it needs, then stores it. The quantize kernels report NaN or infinity as they go, so the data is read
    /// once; a rejected append changes nothing.
    /// </summary>
    private void AppendQuantized(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int dim = _options.HeadDim, heads = _options.KvHeads, width = _options.TokenWidth, rows = tokens * heads;
        sbyte[] quantized = ArrayPool<sbyte>.Shared.Rent(2 * tokens * width);
        float[] scales = ArrayPool<float>.Shared.Rent(2 * rows);
        try
        {
            Span<sbyte> qk = quantized.AsSpan(0, tokens * width), qv = quantized.AsSpan(tokens * width, tokens * width);
            Span<float> keyScales = scales.AsSpan(0, rows), valueScales = scales.AsSpan(rows, rows);
            bool staticKeys = _options.Scheme.HasStaticKeys, staticValues = _options.Scheme.HasStaticValues;
            bool keysFinite = staticKeys ? QuantizeChannels(keys, _options.Scheme.KeyScales.Slice(layer * width, width), qk) : QuantizeRows(keys, dim, qk, keyScales);
            bool valuesFinite = staticValues ? QuantizeChannels(values, _options.Scheme.ValueScales.Slice(layer * width, width), qv) : QuantizeRows(values, dim, qv, valueScales);
            if (!keysFinite || !valuesFinite)
            {
                QuantizationPrimitives.ThrowIfNonFinite(keys, Invariant($"keys (layer {layer})"), nameof(keys));
                QuantizationPrimitives.ThrowIfNonFinite(values, Invariant($"values (layer {layer})"), nameof(values));
            }

            int start = _quantized[layer];
            Grow(layer, start + tokens);
            for (int t = 0; t < tokens; t++)
            {
                for (int head = 0; head < heads; head++)
                {
                    int row = (t * heads) + head;
                    StoreRow(layer, start + t, head, qk.Slice(row * dim, dim), qv.Slice(row * dim, dim), staticKeys ? 0f : keyScales[row], staticValues ? 0f : valueScales[row]);
                }
            }

            _quantized[layer] = start + tokens;
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(quantized);
            ArrayPool<float>.Shared.Return(scales);
        }
    }

    /// <summary>
    /// Dynamic: quantizes each row of <paramref name="rowLength"/> with its own symmetric scale (the library's per-token
    /// scheme, the same bits as <see cref="QuantizationPrimitives.QuantizeDynamic(ReadOnlySpan{float}, ReadOnlySpan{int}, QuantizationScheme, Span{sbyte}, Span{float}, Span{sbyte}, string?)"/>);
    /// returns false when a row may hold NaN or an infinity.
    /// </summary>
    private static bool QuantizeRows(ReadOnlySpan<float> source, int rowLength, Span<sbyte> destination, Span<float> scales)
    {
        Span<byte> bytes = MemoryMarshal.AsBytes(destination);
        for (int row = 0; row < scales.Length; row++)
        {
            ReadOnlySpan<float> run = source.Slice(row * rowLength, rowLength);
            if (QuantizationPrimitives.MinMaxCore(run, out float min, out float max))
            {
                return false;
            }

            ScaleAndZeroPoint pair = PerTokenScheme.Convention.Compute(min, max, PerTokenScheme.QuantMin, PerTokenScheme.QuantMax, symmetric: true, out float factor, nameof(source));
            scales[row] = pair.Scale;
            QuantizationPrimitives.QuantizeLanes(PerTokenScheme.Convention, run, bytes.Slice(row * rowLength, rowLength), new UniformParameters(factor, 0), QuantizedType.Int8);
        }

        return true;
    }

    /// <summary>Static: quantizes [tokens, KV heads x head dim] with one (validated) scale per channel; returns false when the data may hold NaN or an infinity.</summary>
    private bool QuantizeChannels(ReadOnlySpan<float> source, ReadOnlySpan<float> channelScales, Span<sbyte> destination)
    {
        Span<byte> bytes = MemoryMarshal.AsBytes(destination);
        int width = channelScales.Length;
        for (int first = 0; first < source.Length; first += width)
        {
            if (QuantizationPrimitives.QuantizeLanes(NumericConvention.Onnx, source.Slice(first, width), bytes.Slice(first, width), new PerLaneParameters(channelScales, _channelZeroPoints), QuantizedType.Int8))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>KIVI: copies tokens into the float window, quantizing the window each time it fills.</summary>
    private void AppendToWindow(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int window = _options.Scheme.ResidentTokens, dim = _options.HeadDim;
        int flushes = (_resident[layer] + tokens) / window;
        Grow(layer, _quantized[layer] + (flushes * window));
        for (int t = 0; t < tokens; t++)
        {
            int slot = _resident[layer];
            for (int head = 0; head < _options.KvHeads; head++)
            {
                int source = ((t * _options.KvHeads) + head) * dim;
                int target = WindowOffset(layer, head, slot);
                keys.Slice(source, dim).CopyTo(_windowKeys.AsSpan(target, dim));
                values.Slice(source, dim).CopyTo(_windowValues.AsSpan(target, dim));
            }

            _resident[layer] = slot + 1;
            if (slot + 1 == window)
            {
                FlushWindow(layer);
            }
        }
    }

    /// <summary>
    /// KIVI: quantizes the full window at once, keys per channel in groups of G tokens ([KV heads, R, head dim] with
    /// groups along the token axis), values per token and head, stores it in the blocks <see cref="Grow"/> rented and empties the window.
    /// </summary>
    private void FlushWindow(int layer)
    {
        KvCacheScheme scheme = _options.Scheme;
        int window = scheme.ResidentTokens, dim = _options.HeadDim, heads = _options.KvHeads;
        int size = heads * window * dim, rows = heads * window, groups = window / scheme.GroupSize;
        sbyte[] quantizedKeys = ArrayPool<sbyte>.Shared.Rent(size);
        sbyte[] quantizedValues = ArrayPool<sbyte>.Shared.Rent(size);
        float[] keyScales = ArrayPool<float>.Shared.Rent(groups * heads * dim);
        float[] valueScales = ArrayPool<float>.Shared.Rent(rows);
        sbyte[] zeroPoints = ArrayPool<sbyte>.Shared.Rent(Math.Max(rows, groups * heads * dim));
        try
        {
            ReadOnlySpan<float> windowKeys = _windowKeys.AsSpan(WindowOffset(layer, 0, 0), size);
            ReadOnlySpan<float> windowValues = _windowValues.AsSpan(WindowOffset(layer, 0, 0), size);
            QuantizationScheme keyScheme = PerTokenScheme.WithGranularity(QuantizationGranularity.PerGroup(scheme.GroupSize, axis: 1));
            QuantizationPrimitives.QuantizeDynamic(windowKeys, [heads, window, dim], keyScheme, quantizedKeys.AsSpan(0, size), keyScales.AsSpan(0, groups * heads * dim), zeroPoints.AsSpan(0, groups * heads * dim));
            QuantizationPrimitives.QuantizeDynamic(windowValues, [rows, dim], PerTokenScheme, quantizedValues.AsSpan(0, size), valueScales.AsSpan(0, rows), zeroPoints.AsSpan(0, rows));

            int start = _quantized[layer];
            for (int head = 0; head < heads; head++)
            {
                for (int t = 0; t < window; t++)
                {
                    int row = (head * window) + t;
                    StoreRow(layer, start + t, head, quantizedKeys.AsSpan(row * dim, dim), quantizedValues.AsSpan(row * dim, dim), 0f, valueScales[row]);
                }

                for (int g = 0; g < groups; g++)
                {
                    int token = start + (g * scheme.GroupSize);
                    KvCacheBlock block = _blocks[layer][token / _options.BlockTokens];
                    int slot = (token % _options.BlockTokens) / scheme.GroupSize;
                    keyScales.AsSpan(((head * groups) + g) * dim, dim).CopyTo(block.KeyScales.AsSpan(KeyGroupOffset(head, slot), dim));
                }
            }

            _quantized[layer] = start + window;
            _resident[layer] = 0;
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(quantizedKeys);
            ArrayPool<sbyte>.Shared.Return(quantizedValues);
            ArrayPool<float>.Shared.Return(keyScales);
            ArrayPool<float>.Shared.Return(valueScales);
            ArrayPool<sbyte>.Shared.Return(zeroPoints);
        }
    }

    /// <summary>Rents, all at once or not at all, the blocks a layer needs to hold <paramref name="quantizedTokens"/> quantized tokens.</summary>
    private void Grow(int layer, int quantizedTokens)
    {
        int needed = ((quantizedTokens + _options.BlockTokens - 1) / _options.BlockTokens) - _blocks[layer].Count;
        if (needed > 0)
        {
            _blocks[layer].AddRange(_pool.Rent(needed));
        }
    }

    /// <summary>
    /// Stores one quantized (token, head) row and its per-token scales (ignored by schemes without them): the values as a
    /// row, the keys in channel pairs (see <see cref="AttentionPrimitives.KeyScores"/>).
    /// </summary>
    private void StoreRow(int layer, int token, int head, ReadOnlySpan<sbyte> keys, ReadOnlySpan<sbyte> values, float keyScale, float valueScale)
    {
        int tokensPerBlock = _options.BlockTokens, slot = token % tokensPerBlock, dim = _options.HeadDim;
        KvCacheBlock block = _blocks[layer][token / tokensPerBlock];
        values.CopyTo(block.Values.AsSpan(((head * tokensPerBlock) + slot) * dim));
        Span<sbyte> pairs = block.Keys.AsSpan(head * tokensPerBlock * AttentionPrimitives.PaddedDim(dim));
        for (int d = 0; d < dim; d += 2)
        {
            int at = ((d / 2 * tokensPerBlock) + slot) * 2;
            pairs[at] = keys[d];
            pairs[at + 1] = d + 1 < dim ? keys[d + 1] : (sbyte)0;
        }

        if (_options.Scheme.Kind == KvCacheSchemeKind.DynamicPerTokenHead)
        {
            block.KeyScales[(head * tokensPerBlock) + slot] = keyScale;
        }

        if (!_options.Scheme.HasStaticValues)
        {
            block.ValueScales[(head * tokensPerBlock) + slot] = valueScale;
        }
    }

    /// <summary>Reads one stored key row back from its channel pairs.</summary>
    private void LoadKeyRow(KvCacheBlock block, int head, int slot, Span<sbyte> row)
    {
        int tokensPerBlock = _options.BlockTokens;
        ReadOnlySpan<sbyte> pairs = block.Keys.AsSpan(head * tokensPerBlock * AttentionPrimitives.PaddedDim(row.Length));
        for (int d = 0; d < row.Length; d++)
        {
            row[d] = pairs[((d / 2 * tokensPerBlock) + slot) * 2 + (d & 1)];
        }
    }

    private int WindowOffset(int layer, int head, int slot) =>
        (((layer * _options.KvHeads) + head) * _options.Scheme.ResidentTokens + slot) * _options.HeadDim;

    private int KeyGroupOffset(int head, int groupSlot) =>
        ((head * (_options.BlockTokens / _options.Scheme.GroupSize)) + groupSlot) * _options.HeadDim;

    /// <summary>
    /// Attention of one KV head's query rows (<paramref name="tokens"/> tokens x group, token t seeing the first
    /// <c>before + t + 1</c> tokens): scores block by block (each block's keys read once for every row that sees it),
    /// the causal softmax, then the weighted values block by block.
    /// </summary>
    private void AttendHead(int layer, int head, int before, int tokens, AttentionWorkspace workspace)
    {
        KvCacheScheme scheme = _options.Scheme;
        int group = _options.QueryHeadsPerKvHead, dim = _options.HeadDim, paddedDim = AttentionPrimitives.PaddedDim(dim), tokensPerBlock = _options.BlockTokens;
        int rows = tokens * group, count = before + tokens, quantized = Math.Min(_quantized[layer], count);
        float inverseSqrtDim = 1f / MathF.Sqrt(dim);
        Span<float> scores = workspace.Scores.AsSpan(0, rows * count);
        ReadOnlySpan<float> queries = workspace.Rows.AsSpan(0, rows * dim);
        Span<float> output = workspace.Output.AsSpan(0, rows * dim);
        ReadOnlySpan<float> channelScales = scheme.HasStaticKeys
            ? scheme.KeyScales.Slice(((layer * _options.KvHeads) + head) * dim, dim)
            : [];
        if (scheme.Kind != KvCacheSchemeKind.Kivi)
        {
            PrepareQueries(queries, channelScales, inverseSqrtDim, workspace, 0, rows);
        }

        bool prefetch = (long)_quantized[layer] * _options.TokenWidth * 2 >= PrefetchBytes;
        for (int first = 0, b = 0; first < quantized; first += tokensPerBlock, b++)
        {
            KvCacheBlock block = _blocks[layer][b];
            int blockTokens = Math.Min(tokensPerBlock, quantized - first), row = FirstRow(first, before, group);
            ReadOnlySpan<sbyte> keys = block.Keys.AsSpan(head * tokensPerBlock * paddedDim, tokensPerBlock * paddedDim);
            if (prefetch)
            {
                PrefetchNext(layer, head, b, keys: true);
            }

            if (scheme.Kind == KvCacheSchemeKind.Kivi)
            {
                int groupSize = scheme.GroupSize;
                for (int g = 0; g * groupSize < blockTokens; g++)
                {
                    PrepareQueries(queries, block.KeyScales.AsSpan(KeyGroupOffset(head, g), dim), inverseSqrtDim, workspace, row, rows);
                    AttentionPrimitives.KeyScores(keys[(g * groupSize * 2)..], tokensPerBlock, Math.Min(groupSize, blockTokens - (g * groupSize)), workspace.Queries.AsSpan(row * paddedDim, (rows - row) * paddedDim), workspace.Factors.AsSpan(row, rows - row), [], scores[((row * count) + first + (g * groupSize))..], count);
                }
            }
            else
            {
                ReadOnlySpan<float> tokenScales = !scheme.HasStaticKeys ? block.KeyScales.AsSpan(head * tokensPerBlock, blockTokens) : [];
                AttentionPrimitives.KeyScores(keys, tokensPerBlock, blockTokens, workspace.Queries.AsSpan(row * paddedDim, (rows - row) * paddedDim), workspace.Factors.AsSpan(row, rows - row), tokenScales, scores[((row * count) + first)..], count);
            }
        }

        if (count > quantized)
        {
            Span<float> scaled = workspace.ScaledQueries.AsSpan(0, rows * dim);
            TensorPrimitives.Multiply(queries, inverseSqrtDim, scaled);
            AttentionPrimitives.CausalDots(_windowKeys.AsSpan(WindowOffset(layer, head, 0), (count - quantized) * dim), quantized, scaled, dim, group, before, scores, count);
        }

        AttentionPrimitives.CausalSoftmax(scores, count, group, before);
        output.Clear();
        for (int first = 0, b = 0; first < quantized; first += tokensPerBlock, b++)
        {
            KvCacheBlock block = _blocks[layer][b];
            int blockTokens = Math.Min(tokensPerBlock, quantized - first), row = FirstRow(first, before, group);
            if (prefetch)
            {
                PrefetchNext(layer, head, b, keys: false);
            }

            if (!scheme.HasStaticValues)
            {
                ReadOnlySpan<float> valueScales = block.ValueScales.AsSpan(head * tokensPerBlock, blockTokens);
                for (int r = row; r < rows; r++)
                {
                    Span<float> weights = scores.Slice((r * count) + first, blockTokens);
                    TensorPrimitives.Multiply(weights, valueScales, weights);
                }
            }

            AttentionPrimitives.WeightedSum(block.Values.AsSpan(head * tokensPerBlock * dim, blockTokens * dim), dim, scores[((row * count) + first)..], count, rows - row, output[(row * dim)..]);
        }

        if (scheme.HasStaticValues)
        {
            ReadOnlySpan<float> valueScales = scheme.ValueScales.Slice(((layer * _options.KvHeads) + head) * dim, dim);
            for (int r = 0; r < rows; r++)
            {
                TensorPrimitives.Multiply(output.Slice(r * dim, dim), valueScales, output.Slice(r * dim, dim));
            }
        }

        if (count > quantized)
        {
            AttentionPrimitives.WeightedSum(_windowValues.AsSpan(WindowOffset(layer, head, 0), (count - quantized) * dim), dim, scores[quantized..], count, rows, output);
        }
    }

    /// <summary>The first query row that sees a token at <paramref name="first"/>: token t sees <c>before + t + 1</c> tokens.</summary>
    private static int FirstRow(int first, int before, int group) => Math.Max(0, first - before) * group;

    /// <summary>Asks for a KV head's keys (and their scales) or values of the block after <paramref name="block"/>, if there is one.</summary>
    private void PrefetchNext(int layer, int head, int block, bool keys)
    {
        if (block + 1 >= _blocks[layer].Count)
        {
            return;
        }

        KvCacheBlock next = _blocks[layer][block + 1];
        sbyte[] data = keys ? next.Keys : next.Values;
        int rows = data.Length / _options.KvHeads;
        AttentionPrimitives.Prefetch<sbyte>(data.AsSpan(head * rows, rows));
        float[] scales = keys ? next.KeyScales : next.ValueScales;
        int perHead = scales.Length / _options.KvHeads;
        AttentionPrimitives.Prefetch<float>(scales.AsSpan(head * perHead, perHead));
    }

    /// <summary>Quantizes query rows [first, rows) (channel scales folded in) to int16 and gets the factor that turns their int dots into scores.</summary>
    private static void PrepareQueries(ReadOnlySpan<float> queries, ReadOnlySpan<float> channelScales, float inverseSqrtDim, AttentionWorkspace workspace, int first, int rows)
    {
        int dim = channelScales.IsEmpty ? queries.Length / rows : channelScales.Length, paddedDim = AttentionPrimitives.PaddedDim(dim);
        for (int r = first; r < rows; r++)
        {
            float scale = AttentionPrimitives.QuantizeQuery(queries.Slice(r * dim, dim), channelScales, workspace.ScaledQueries.AsSpan(r * dim, dim), workspace.Queries.AsSpan(r * paddedDim, paddedDim));
            workspace.Factors[r] = scale * inverseSqrtDim;
        }
    }

    private void Dequantize(int layer, int head, Span<float> destination, bool keys)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = GetCount(layer);
        KvCacheArguments.ValidateHeadRows(_options, layer, head, count, destination);
        KvCacheScheme scheme = _options.Scheme;
        int dim = _options.HeadDim, tokensPerBlock = _options.BlockTokens, quantized = _quantized[layer];
        int channel = ((layer * _options.KvHeads) + head) * dim;
        sbyte[] keyRow = new sbyte[dim];
        for (int t = 0; t < quantized; t++)
        {
            KvCacheBlock block = _blocks[layer][t / tokensPerBlock];
            int slot = t % tokensPerBlock;
            ReadOnlySpan<sbyte> row = block.Values.AsSpan(((head * tokensPerBlock) + slot) * dim, dim);
            if (keys)
            {
                LoadKeyRow(block, head, slot, keyRow);
                row = keyRow;
            }

            Span<float> target = destination.Slice(t * dim, dim);
            if (keys ? scheme.HasStaticKeys : scheme.HasStaticValues)
            {
                DequantizeRow(row, (keys ? scheme.KeyScales : scheme.ValueScales).Slice(channel, dim), target);
            }
            else if (keys && scheme.Kind == KvCacheSchemeKind.Kivi)
            {
                DequantizeRow(row, block.KeyScales.AsSpan(KeyGroupOffset(head, slot / scheme.GroupSize), dim), target);
            }
            else
            {
                QuantizationPrimitives.Dequantize(row, target, (keys ? block.KeyScales : block.ValueScales)[(head * tokensPerBlock) + slot]);
            }
        }

        int resident = count - quantized;
        if (resident > 0)
        {
            (keys ? _windowKeys : _windowValues).AsSpan(WindowOffset(layer, head, 0), resident * dim).CopyTo(destination[(quantized * dim)..]);
        }
    }

    /// <summary>Dequantizes a row with one scale per element: <c>q[d] * scales[d]</c>, the library's dequantize convention.</summary>
    private static void DequantizeRow(ReadOnlySpan<sbyte> row, ReadOnlySpan<float> scales, Span<float> destination)
    {
        for (int d = 0; d < row.Length; d++)
        {
            destination[d] = NumericConvention.Dequantize(row[d], scales[d], 0);
        }
    }

    /// <summary>The cache as the attention driver sees it: one layer's <see cref="AttendHead"/>.</summary>
    private readonly struct HeadAttention(Int8KvCache cache, int layer) : IHeadAttention
    {
        public void AttendHead(int head, int before, int tokens, AttentionWorkspace workspace) => cache.AttendHead(layer, head, before, tokens, workspace);
    }
}
