using System.Runtime.CompilerServices;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Kernels;

/// <summary>
/// The policy of the run-time assembled AVX-512 VNNI kernel: the process-wide switch, the NativeAOT default, the path a
/// layer reports and the perf map. In a collection of its own that runs after the parallel tests, alone: flipping the
/// switch changes the path every layer created meanwhile would choose.
/// </summary>
[Collection(ProcessWideSwitches.Name)]
public class AssembledKernelSwitchTests
{
    [Theory]
    [InlineData(null, true, true)]
    [InlineData(null, false, false)] // NativeAOT: off unless asked for
    [InlineData(true, true, false)]
    [InlineData(true, false, false)]
    [InlineData(false, true, true)]
    [InlineData(false, false, true)] // NativeAOT, turned on explicitly
    public void Policy_FollowsTheSwitch_ElseWhetherTheRuntimeGeneratesCode(bool? disableSwitch, bool dynamicCode, bool enabled) =>
        Assert.Equal(enabled, Avx512VnniKernel.IsEnabled(disableSwitch, dynamicCode));

    [Fact]
    public void DisableAssembledKernelsSwitch_LaterLayersUseAnIntrinsicPath_WithTheSameBits()
    {
        Random random = new(5);
        float[] weights = LinearKernelTests.Gaussian(random, 96 * 40);
        float[] input = LinearKernelTests.Gaussian(random, 3 * 40);
        float[] expected = new float[3 * 96];
        QuantizedLinear before = QuantizedLinear.Create(weights, 96, 40);
        Assert.Equal(Int8KernelPaths.Best, before.KernelPath);
        Assert.True(RuntimeFeature.IsDynamicCodeSupported); // under the JIT the policy leaves the kernel on where the CPU has it
        Assert.Equal(Avx512VnniKernel.IsSupported, before.KernelPath == Int8KernelPath.Avx512Vnni);
        before.Forward(input, expected, 3, QuantizedLinearMode.W8A8);
        AppContext.SetSwitch(QuantizedLinear.DisableAssembledKernelsSwitch, true);
        try
        {
            QuantizedLinear layer = QuantizedLinear.Create(weights, 96, 40);
            Assert.False(Int8KernelPaths.IsSupported(Int8KernelPath.Avx512Vnni));
            Assert.NotEqual(Int8KernelPath.Avx512Vnni, layer.KernelPath);
            float[] actual = new float[3 * 96];
            layer.Forward(input, actual, 3, QuantizedLinearMode.W8A8);
            LinearKernelTests.AssertSameBits(expected, actual, $"W8A8 with the switch set ({layer.KernelPath})");
        }
        finally
        {
            AppContext.SetSwitch(QuantizedLinear.DisableAssembledKernelsSwitch, false);
        }
    }

    [Fact]
    public void KernelPath_OfAFourBitLayer_IsItsW4A8Path()
    {
        float[] weights = LinearKernelTests.Gaussian(new Random(6), 32 * 64);
        QuantizedLinear layer = new(QuantizedTensor.Quantize(weights, [32, 64], QuantizationScheme.Int4PerGroup(32)));
        Assert.Equal(Int4Int8Kernel.Best, layer.KernelPath);
    }

    [Fact]
    public void PerfMap_LinesAreStartSizeName_InTheRuntimesHexadecimal()
    {
        string lines = PerfMap.Format([(new IntPtr(0x7F001234ABC0), 0x1C4, Avx512VnniKernel.Name(0)), (new IntPtr(0x7F001234AE00), 90, Avx512VnniKernel.Name(Avx512VnniKernel.MaxTokens + 3))]);
        Assert.Equal("0x7f001234abc0 1c4 [Quantization] Avx512VnniKernel 1 token(s) x 1 panel\n0x7f001234ae00 5a [Quantization] Avx512VnniKernel 4 token(s) x 2 panels\n", lines);
    }

    [Fact]
    public void PerfMap_NamesEveryAssembledKernel_WhenTheRuntimeWritesAMap()
    {
        // Meaningful when the test process runs with DOTNET_PerfMapEnabled=1 or 3 on a machine with AVX-512 VNNI (run it so
        // by hand, or in CI); elsewhere there is no map to check.
        if (!PerfMap.IsEnabled || !Avx512VnniKernel.IsSupported)
        {
            return;
        }

        string[] lines = File.ReadAllLines(PerfMap.FilePath);
        IReadOnlyList<IntPtr> addresses = Avx512VnniKernel.Addresses!;
        Assert.Equal(Avx512VnniKernel.MaxTokens + Avx512VnniKernel.MaxPairedTokens, addresses.Count);
        for (int i = 0; i < addresses.Count; i++)
        {
            string start = "0x" + ((ulong)addresses[i]).ToString("x", System.Globalization.CultureInfo.InvariantCulture) + " ";
            // (The runtime may have had code at the same address before: pages it freed can be mapped for the kernels.)
            Assert.Single(lines, l => l.StartsWith(start, StringComparison.Ordinal) && l.EndsWith(" " + Avx512VnniKernel.Name(i), StringComparison.Ordinal));
        }

        // The runtime's own lines around ours are whole: every line is 0xSTART SIZE name, as the runtime writes them.
        Assert.All(lines, l => Assert.Matches("^0x[0-9a-f]+ [0-9a-f]+ .+$", l));
    }
}
