using System.IO.Compression;
using System.Text;

using Quantization.Tests.TestUtilities;

using Xunit.Abstractions;

namespace Quantization.Tests.Calibration;

/// <summary>
/// Reading .npz archives: numpy's own files, the same archive built here byte by byte, and hostile archives.
/// Data/golden.npz and Data/golden_compressed.npz were written once by numpy 1.24.2 (Debian's python3-numpy) with:
/// <code>
/// import numpy as np
/// a = dict(input_ids=np.array([[101, 7592, 102], [101, 2088, 102]], dtype=np.int64),
///          mask=np.array([[1, 1, 0], [1, 0, 0]], dtype=np.int32),
///          x=np.array([[0.5, -1.25], [3.0, 1e-3]], dtype=np.float32),
///          h=np.array([1.5, -2.0, 65504.0], dtype=np.float16),
///          flags=np.array([True, False]),
///          scalar=np.float64(2.718281828459045),
///          empty=np.zeros((0, 4), dtype=np.float32),
///          big=np.array([-300, 300], dtype='>i2'))
/// np.savez('golden.npz', **a)
/// np.savez_compressed('golden_compressed.npz', **a)
/// </code>
/// </summary>
public class NpzReaderTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("golden.npz")]
    [InlineData("golden_compressed.npz")]
    public void NumpysFiles_ReadWithTheirDtypesShapesAndValues(string file)
    {
        IReadOnlyDictionary<string, NumPyArray> arrays = NpzReader.Read(Path.Combine(AppContext.BaseDirectory, "Calibration", "Data", file));
        Assert.Equal(["input_ids", "mask", "x", "h", "flags", "scalar", "empty", "big"], arrays.Keys);
        foreach ((string name, NumPyArray expected) in Golden())
        {
            NumPyArray actual = arrays[name];
            Assert.Equal(expected.DataType, actual.DataType);
            Assert.Equal(expected.Shape, actual.Shape);
            Assert.Equal(expected.Bytes.ToArray(), actual.Bytes.ToArray());
        }

        Assert.Equal([101L, 7592, 102, 101, 2088, 102], arrays["input_ids"].ToArray<long>());
        Assert.Equal([-300, 300], arrays["big"].ToArray<short>());
        Assert.Equal([true, false], arrays["flags"].ToArray<bool>());
        Assert.Equal(2.718281828459045, arrays["scalar"].ToArray<double>()[0]);
    }

    [Fact]
    public void HandBuiltStoredArchive_IsNumpysFileByteForByte()
    {
        // The .npy members come from NpyWriter, the zip structure from ZipBuilder: together they must be numpy's bytes.
        ZipBuilder zip = new();
        foreach ((string name, NumPyArray array) in Golden())
        {
            zip.Add(name + ".npy", name == "big" ? BigEndianInt16(array) : Npy(array));
        }

        Assert.Equal(File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Calibration", "Data", "golden.npz")), zip.ToArray());
    }

    [Fact]
    public void HandBuiltDeflateArchive_Reads()
    {
        ZipBuilder zip = new();
        foreach ((string name, NumPyArray array) in Golden())
        {
            zip.Add(name + ".npy", name == "big" ? BigEndianInt16(array) : Npy(array), deflate: true);
        }

        IReadOnlyDictionary<string, NumPyArray> arrays = NpzReader.Read(new MemoryStream(zip.ToArray()));
        foreach ((string name, NumPyArray expected) in Golden())
        {
            Assert.Equal(expected.Bytes.ToArray(), arrays[name].Bytes.ToArray());
            Assert.Equal(expected.Shape, arrays[name].Shape);
        }
    }

    [Theory]
    [InlineData("../x.npy", "climbs out")]
    [InlineData("/x.npy", "absolute")]
    [InlineData("a/../../b.npy", "climbs out")]
    [InlineData("a//b.npy", "empty")]
    [InlineData("./x.npy", "climbs out")]
    [InlineData("C:/x.npy", "absolute")]
    [InlineData("a\\..\\x.npy", "absolute or non-portable")]
    [InlineData("x\n.npy", "non-portable")]
    [InlineData("readme.txt", "not a .npy member")]
    [InlineData("dir/", "not a .npy member")]
    [InlineData(".npy", "not a .npy member")]
    public void BadMemberNames_AreRejected(string member, string problem)
    {
        byte[] archive = new ZipBuilder().Add("ok.npy", Npy(NumPyArray.Create<float>([1f], 1))).Add(member, Npy(NumPyArray.Create<float>([2f], 1))).ToArray();
        AssertRejected(archive, NpzReader.Printable(member), problem);
    }

    [Fact]
    public void NamesWithColonsAndFolders_AreArrays()
    {
        byte[] npy = Npy(NumPyArray.Create<float>([1f], 1));
        Assert.Equal(["input:0", "serving_default/x"], NpzReader.Read(new MemoryStream(new ZipBuilder().Add("input:0.npy", npy).Add("serving_default/x.npy", npy).ToArray())).Keys);
    }

    [Fact]
    public void DuplicateArrayName_IsRejected()
    {
        byte[] npy = Npy(NumPyArray.Create<long>([1, 2], 2));
        AssertRejected(new ZipBuilder().Add("ids.npy", npy).Add("ids.npy", npy).ToArray(), "ids.npy", "second member for the array 'ids'");
    }

    [Fact]
    public void UnsupportedDtype_IsRejected()
    {
        byte[] npy = Npy(NumPyArray.Create<long>([1, 2], 2));
        byte[] complex = Encoding.Latin1.GetBytes(Encoding.Latin1.GetString(npy).Replace("'<i8'", "'<c8'", StringComparison.Ordinal));
        AssertRejected(new ZipBuilder().Add("z.npy", complex).ToArray(), "z.npy", "Unsupported dtype '<c8'");
        byte[] notNpy = [.. "not a npy file at all"u8];
        AssertRejected(new ZipBuilder().Add("t.npy", notNpy).ToArray(), "t.npy", "magic string");
    }

    [Fact]
    public void HeaderThatDisagreesWithTheMembersSize_IsRejected()
    {
        byte[] npy = Npy(NumPyArray.Create<float>([1, 2, 3, 4, 5, 6], 2, 3));
        AssertRejected(new ZipBuilder().Add("x.npy", npy[..^4]).ToArray(), "x.npy", "24 bytes) but 20 bytes follow it");
        AssertRejected(new ZipBuilder().Add("x.npy", npy[..^4], deflate: true).ToArray(), "x.npy", "24 bytes) but 20 bytes follow it");
    }

    [Fact]
    public void TruncatedMembers_AreRejected()
    {
        byte[] npy = Npy(NumPyArray.Create<float>([.. Enumerable.Range(0, 1000).Select(i => (float)Math.Sin(i))], 1000));
        AssertRejected(new ZipBuilder().Add("x.npy", npy, deflate: true, cutCompressedTo: 200).ToArray(), "x.npy", "truncated");

        // A whole archive cut short loses its central directory.
        byte[] stored = new ZipBuilder().Add("x.npy", npy).ToArray();
        InvalidDataException error = Assert.Throws<InvalidDataException>(() => NpzReader.Read(new MemoryStream(stored[..(stored.Length / 2)])));
        Assert.Contains("Not a zip archive", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MoreDataThanDeclared_IsNotRead()
    {
        // System.IO.Compression stops a member at its declared size: what follows is never decompressed.
        byte[] npy = Npy(NumPyArray.Create<float>(new float[4096], 4096));
        AssertRejected(new ZipBuilder().Add("x.npy", npy, deflate: true, declaredSize: 1000).ToArray(), "x.npy", "but 872 bytes follow it");
    }

    [Theory]
    [InlineData(false, 4L << 30)]
    [InlineData(true, 4L << 30)]
    [InlineData(true, 1L << 40)]
    [InlineData(false, int.MaxValue)]
    public void ZipBomb_DeclaredSize_IsRejectedWithoutAllocatingIt(bool deflate, long declared)
    {
        byte[] npy = Npy(NumPyArray.Create<float>(new float[256], 256));
        byte[] archive = new ZipBuilder().Add("bomb.npy", npy, deflate, declaredSize: declared).ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        AssertRejected(archive, "bomb.npy", "zip bomb");
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine(FormattableString.Invariant($"declared {declared} bytes ({(deflate ? "deflate" : "stored")}): {archive.Length}-byte archive, {allocated} bytes allocated"));
        Assert.True(allocated < 1 << 20, $"allocated {allocated} bytes for a {archive.Length}-byte archive");
    }

    [Fact]
    public void ZipBomb_NpyShapeClaimingGigabytes_IsRejectedWithoutAllocatingIt()
    {
        byte[] npy = Npy(NumPyArray.Create<float>(new float[6], 2, 3));
        byte[] huge = Encoding.Latin1.GetBytes(Encoding.Latin1.GetString(npy).Replace("(2, 3), }", "(20000, 20000), }", StringComparison.Ordinal)[..npy.Length]);
        byte[] archive = new ZipBuilder().Add("huge.npy", huge).ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        AssertRejected(archive, "huge.npy", "1600000000 bytes) but");
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine(FormattableString.Invariant($".npy shape claiming 1.6 GB: {archive.Length}-byte archive, {allocated} bytes allocated"));
        Assert.True(allocated < 1 << 20);
    }

    [Fact]
    public void ZipBomb_OverlappingMembers_AreRejected()
    {
        // One 4 MB member that deflates to a few kB, listed 300 times: each record is honest, together they are not.
        byte[] npy = Npy(NumPyArray.Create<float>(new float[1 << 20], 1 << 20));
        ZipBuilder zip = new ZipBuilder().Add("a0.npy", npy, deflate: true);
        for (int i = 1; i < 300; i++)
        {
            zip.Alias(0, $"a{i}.npy");
        }

        byte[] archive = zip.ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        InvalidDataException error = Assert.Throws<InvalidDataException>(() => NpzReader.Read(new MemoryStream(archive)));
        Assert.Contains("overlapping members", error.Message, StringComparison.Ordinal);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        // Refused from the central directory, before any member is decompressed.
        output.WriteLine(FormattableString.Invariant($"300 overlapping 4 MB members: {archive.Length}-byte archive, {allocated} bytes allocated"));
        Assert.True(allocated < 1 << 20, $"allocated {allocated} bytes");
    }

    [Fact]
    public void NotAZip_AndBadStreams()
    {
        Assert.Contains("Not a zip archive", Assert.Throws<InvalidDataException>(() => NpzReader.Read(new MemoryStream([1, 2, 3]))).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentNullException>(() => NpzReader.Read((Stream)null!));
        string path = Path.Combine(Path.GetTempPath(), $"bad-{Guid.NewGuid():N}.npz");
        File.WriteAllBytes(path, new ZipBuilder().Add("../x.npy", [1]).ToArray());
        try
        {
            Assert.Contains(path, Assert.Throws<InvalidDataException>(() => NpzReader.Read(path)).Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void FromNpzDirectory_ServesOneBatchPerFile_InNameOrder()
    {
        string directory = Directory.CreateTempSubdirectory("npz-").FullName;
        try
        {
            for (int i = 2; i >= 0; i--)
            {
                NpzWriter.Write(Path.Combine(directory, $"batch{i}.npz"), new Dictionary<string, NumPyArray> { ["ids"] = NumPyArray.Create<long>([i, i + 1], 1, 2) });
            }

            File.WriteAllText(Path.Combine(directory, "notes.txt"), "ignored");
            ICalibrationDataSource<IReadOnlyDictionary<string, NumPyArray>> source = CalibrationDataSource.FromNpzDirectory(directory);
            Assert.Equal(3, source.Count);
            List<long> firsts = [];
            foreach (IReadOnlyDictionary<string, NumPyArray> batch in source.ReadBatchesAsync().ToBlockingEnumerable())
            {
                firsts.Add(batch["ids"].ToArray<long>()[0]);
            }

            Assert.Equal([0L, 1, 2], firsts);
            Assert.Throws<DirectoryNotFoundException>(() => CalibrationDataSource.FromNpzDirectory(Path.Combine(directory, "missing")));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>The arrays of the golden files, as numpy holds them (big is stored big-endian in the file).</summary>
    internal static (string Name, NumPyArray Array)[] Golden() =>
    [
        ("input_ids", NumPyArray.Create<long>([101, 7592, 102, 101, 2088, 102], 2, 3)),
        ("mask", NumPyArray.Create<int>([1, 1, 0, 1, 0, 0], 2, 3)),
        ("x", NumPyArray.Create<float>([0.5f, -1.25f, 3f, 1e-3f], 2, 2)),
        ("h", NumPyArray.Create<Half>([(Half)1.5, (Half)(-2.0), (Half)65504.0], 3)),
        ("flags", NumPyArray.Create<bool>([true, false], 2)),
        ("scalar", NumPyArray.Create<double>([2.718281828459045])),
        ("empty", NumPyArray.Create<float>([], 0, 4)),
        ("big", NumPyArray.Create<short>([-300, 300], 2)),
    ];

    internal static byte[] Npy(NumPyArray array)
    {
        using MemoryStream stream = new();
        NpyWriter.Write(stream, array);
        return stream.ToArray();
    }

    /// <summary>The .npy bytes numpy writes for a '>i2' array: the little-endian file with the byte order mark and the bytes swapped.</summary>
    private static byte[] BigEndianInt16(NumPyArray array)
    {
        byte[] file = Npy(array);
        byte[] swapped = Encoding.Latin1.GetBytes(Encoding.Latin1.GetString(file).Replace("'<i2'", "'>i2'", StringComparison.Ordinal));
        for (int i = swapped.Length - array.Bytes.Length; i < swapped.Length; i += 2)
        {
            (swapped[i], swapped[i + 1]) = (swapped[i + 1], swapped[i]);
        }

        return swapped;
    }

    private static void AssertRejected(byte[] archive, string member, string? problem)
    {
        InvalidDataException error = Assert.Throws<InvalidDataException>(() => NpzReader.Read(new MemoryStream(archive)));
        Assert.Contains($"Member '{member}'", error.Message, StringComparison.Ordinal);
        if (problem is not null)
        {
            Assert.Contains(problem, error.Message, StringComparison.Ordinal);
        }
    }
}
