using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Quantization;

/// <summary>
/// An int8 weight [outFeatures, inFeatures] repacked for the linear kernels: panels of <see cref="PanelRows"/> output
/// channels, and inside a panel, for each group of four input features, the panel's channels one after another with
/// their four weights side by side: element <c>[panel][k / 4][channel % 32][k % 4]</c>.
/// </summary>
/// <remarks>
/// One pass over a panel is one sequential stream of 128 bytes per step of four input features, whatever the vector
/// width: a 256-bit vector holds 8 channels x 4 features (the shape <c>vpdpbusd</c> sums into eight int32 lanes), a
/// 128-bit vector 4 x 4. Output channels are padded to a whole panel and input features to a multiple of four with
/// zero weights, which add nothing to any sum.
/// </remarks>
internal sealed class PackedInt8Weight
{
    /// <summary>Output channels per panel.</summary>
    public const int PanelRows = 32;

    /// <summary>Input features per step.</summary>
    public const int StepFeatures = 4;

    /// <summary>Bytes per step of one panel.</summary>
    public const int StepBytes = PanelRows * StepFeatures;

    /// <summary>The alignment of the first panel, a cache line: no vector load of a panel straddles two lines.</summary>
    private const int Alignment = 64;

    private readonly sbyte[] _data;
    private readonly int _offset;

    /// <summary>Initializes a new instance of the <see cref="PackedInt8Weight"/> class by repacking a row-major weight.</summary>
    /// <param name="weight">The weight, row-major [outFeatures, inFeatures].</param>
    /// <param name="outFeatures">The output channels.</param>
    /// <param name="inFeatures">The input features.</param>
    public PackedInt8Weight(ReadOnlySpan<sbyte> weight, int outFeatures, int inFeatures)
    {
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        Steps = (inFeatures + StepFeatures - 1) / StepFeatures;
        Panels = (outFeatures + PanelRows - 1) / PanelRows;
        // Pinned, so that the AVX-512 VNNI kernel can be handed its address, and one line longer, to align it.
        _data = GC.AllocateArray<sbyte>(checked((Panels * Steps * StepBytes) + Alignment - 1), pinned: true);
        _offset = AlignmentOffset(_data);
        ActivationOffsets = new int[Panels * PanelRows];
        for (int n = 0; n < outFeatures; n++)
        {
            ReadOnlySpan<sbyte> row = weight.Slice(n * inFeatures, inFeatures);
            Span<sbyte> panel = _data.AsSpan(_offset + ((n / PanelRows) * PanelBytes), PanelBytes);
            int channelOffset = (n % PanelRows) * StepFeatures;
            int sum = 0;
            for (int k = 0; k < inFeatures; k++)
            {
                panel[((k / StepFeatures) * StepBytes) + channelOffset + (k % StepFeatures)] = row[k];
                sum += row[k];
            }

            ActivationOffsets[n] = 128 * sum;
        }
    }

    /// <summary>Gets the output channels.</summary>
    public int OutFeatures { get; }

    /// <summary>Gets the input features.</summary>
    public int InFeatures { get; }

    /// <summary>Gets the steps of four input features (the padded input length over four).</summary>
    public int Steps { get; }

    /// <summary>Gets the input length the kernels read per token: the input features padded to a multiple of four.</summary>
    public int PaddedInFeatures => Steps * StepFeatures;

    /// <summary>Gets the number of panels.</summary>
    public int Panels { get; }

    /// <summary>Gets the bytes of one panel.</summary>
    public int PanelBytes => Steps * StepBytes;

    /// <summary>Gets 128 x the sum of each output channel's weights (zero for padding channels): what offsetting the activations by 128 adds to a dot product.</summary>
    public int[] ActivationOffsets { get; }

    /// <summary>Gets the first byte of a panel.</summary>
    /// <param name="panel">The panel index.</param>
    /// <returns>A reference to the panel's first byte.</returns>
    public ref sbyte GetPanel(int panel) => ref _data[_offset + (panel * PanelBytes)];

    /// <summary>Gets the address of a panel's first byte, for native code: the data is pinned, so it is valid while this instance is alive.</summary>
    /// <param name="panel">The panel index.</param>
    /// <returns>The address.</returns>
    public unsafe sbyte* GetPanelPointer(int panel) => (sbyte*)Unsafe.AsPointer(ref GetPanel(panel));

    private static unsafe int AlignmentOffset(sbyte[] pinned)
    {
        nuint address = (nuint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        return (int)((Alignment - (address % Alignment)) % Alignment);
    }
}
