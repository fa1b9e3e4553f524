using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Quantization;

// Block layout: where a quantized row is stored (values as rows, keys in channel pairs, scales) and how it is read back.
public sealed partial class Int8KvCache
{
    /// <summary>
    /// Stores the quantized key rows ([count, head dim]) of consecutive tokens of one block and head from
    /// <paramref name="slot"/> on, in channel pairs: [head dim / 2, block tokens, 2], an odd head dim's last pair padded
    /// with 0 (see <see cref="AttentionPrimitives.KeyScores"/>). A pair of a token is one 16-bit move.
    /// </summary>
    private void StoreKeys(KvCacheBlock block, int head, int slot, ReadOnlySpan<sbyte> keys, int count)
    {
        int tokensPerBlock = _options.BlockTokens, dim = _options.HeadDim, pairs = AttentionPrimitives.PaddedDim(dim) / 2;
        Span<sbyte> target = block.Keys.AsSpan(head * tokensPerBlock * 2 * pairs, tokensPerBlock * 2 * pairs);
        if (slot + count > tokensPerBlock || keys.Length < count * dim)
        {
            throw new UnreachableException("Key rows beyond their block.");
        }

        if (dim % 2 == 0)
        {
            ref ushort source = ref Unsafe.As<sbyte, ushort>(ref MemoryMarshal.GetReference(keys));
            ref ushort destination = ref Unsafe.As<sbyte, ushort>(ref MemoryMarshal.GetReference(target));
            if (count == 1)
            {
                // A decoded token: one pair to each pair row, four per step (the general loop spent ~20 instructions a pair).
                ref ushort run = ref Unsafe.Add(ref destination, slot);
                nuint stride = (nuint)tokensPerBlock, p = 0;
                for (; p + 4 <= (nuint)pairs; p += 4)
                {
                    ref ushort row = ref Unsafe.Add(ref run, p * stride);
                    row = Unsafe.Add(ref source, p);
                    Unsafe.Add(ref row, stride) = Unsafe.Add(ref source, p + 1);
                    Unsafe.Add(ref row, 2 * stride) = Unsafe.Add(ref source, p + 2);
                    Unsafe.Add(ref row, 3 * stride) = Unsafe.Add(ref source, p + 3);
                }

                for (; p < (nuint)pairs; p++)
                {
                    Unsafe.Add(ref run, p * stride) = Unsafe.Add(ref source, p);
                }

                return;
            }

            // A group of tokens (KIVI): pair by pair, each pair row's run written in order from the rows' strided pairs.
            nuint rowPairs = (nuint)pairs, tokens = (nuint)count;
            for (nuint p = 0; p < rowPairs; p++)
            {
                ref ushort run = ref Unsafe.Add(ref destination, (p * (nuint)tokensPerBlock) + (nuint)slot);
                ref ushort column = ref Unsafe.Add(ref source, p);
                for (nuint t = 0; t < tokens; t++)
                {
                    Unsafe.Add(ref run, t) = Unsafe.Add(ref column, t * rowPairs);
                }
            }

            return;
        }

        for (int t = 0; t < count; t++)
        {
            for (int d = 0; d < dim; d += 2)
            {
                int at = ((d / 2 * tokensPerBlock) + slot + t) * 2;
                target[at] = keys[(t * dim) + d];
                target[at + 1] = d + 1 < dim ? keys[(t * dim) + d + 1] : (sbyte)0;
            }
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
}
